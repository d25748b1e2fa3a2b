"""A TF-Serving-compatible REST server for SavedModels, for machines where tensorflow/serving cannot be pulled.

It follows TFSERVING_CONTRACT.md: `tensorflow_model_server` flags, numeric version directories
polled from the base path, version policies and labels from `--model_config_file`, load before
unload, states START/LOADING/AVAILABLE/UNLOADING/END (failures stay listed as END with their
error), `{"error": ...}` bodies with the real status codes, row and columnar predict, metadata,
and the REST port closed until every model has a version loaded. gRPC (`--port`) is parsed but
not served: this project speaks REST only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving_standin.model_config import ModelConfig, VersionPolicy, parse_model_config

EXIT_BAD_FLAG = 255  # what tensorflow_model_server returns for a bad value of a known flag
STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")
DEFAULT_SIGNATURE = "serving_default"
_VERSION_NAME = re.compile(r"[0-9]+")
_ROUTE = re.compile(
    r"^/v1/models/(?P<model>[^/:]+)"
    r"(?:/versions/(?P<version>-?[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$"
)
HTTP_STATUS = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "DEADLINE_EXCEEDED": 504,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "UNIMPLEMENTED": 501,
}

# The real server's flags this one understands; other real flags are accepted silently.
FLAG_TYPES: dict[str, type] = {
    "port": int,
    "rest_api_port": int,
    "model_name": str,
    "model_base_path": str,
    "model_config_file": str,
    "model_config_file_poll_wait_seconds": int,
    "file_system_poll_wait_seconds": int,
    "max_num_load_retries": int,
    "load_retry_interval_micros": int,
    "allow_version_labels_for_unavailable_models": bool,
    "rest_api_timeout_in_ms": int,
    "rest_api_num_threads": int,
    "enable_batching": bool,
    "batching_parameters_file": str,
    "monitoring_config_file": str,
    "tensorflow_intra_op_parallelism": int,
    "tensorflow_inter_op_parallelism": int,
    "tensorflow_session_parallelism": int,
    "saved_model_tags": str,
    "enable_model_warmup": bool,
    "num_load_threads": int,
    "num_unload_threads": int,
    "rest_api_enable_cors_support": bool,
    "grpc_channel_arguments": str,
    "grpc_socket_path": str,
    "model_base_path_prefix": str,
}
FLAG_DEFAULTS: dict[str, Any] = {
    "port": 8500,
    "rest_api_port": 0,
    "model_name": "default",
    "model_base_path": "",
    "model_config_file": "",
    "model_config_file_poll_wait_seconds": 0,
    "file_system_poll_wait_seconds": 1,
    "max_num_load_retries": 5,
    "load_retry_interval_micros": 60_000_000,
    "allow_version_labels_for_unavailable_models": False,
    "saved_model_tags": "serve",
}


class ServingError(Exception):
    """An error with a TF status code name; the REST layer turns it into `{"error": ...}`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FlagError(ValueError):
    """A known flag with a value of the wrong type."""


def parse_flags(argv: list[str], warn: Callable[[str], None]) -> dict[str, Any]:
    """`--name=value` flags, later copies winning; unknown flags only warned about, like the real server."""
    flags = dict(FLAG_DEFAULTS)
    for argument in argv:
        if not argument.startswith("-"):
            warn(f"ignoring positional argument {argument!r}")
            continue
        name, has_value, value = argument.lstrip("-").partition("=")
        kind = FLAG_TYPES.get(name)
        if kind is None:
            warn(f"unknown flag {argument!r} ignored")
            continue
        if kind is bool:
            if not has_value or value.lower() in ("true", "1"):
                flags[name] = True
            elif value.lower() in ("false", "0"):
                flags[name] = False
            else:
                raise FlagError(f"flag --{name}: {value!r} is not a boolean")
        elif kind is int:
            try:
                flags[name] = int(value)
            except ValueError:
                raise FlagError(f"flag --{name}: {value!r} is not an integer") from None
        else:
            if not has_value:
                raise FlagError(f"flag --{name} needs a value (--{name}=...)")
            flags[name] = value
    return flags


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} standin: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- loading


def _tf() -> Any:
    import tensorflow as tf

    return tf


def _status_code(error: BaseException) -> str:
    """The TF status code name of an exception (INVALID_ARGUMENT, NOT_FOUND, ...)."""
    tf = _tf()
    if isinstance(error, tf.errors.OpError):
        return _OP_ERROR_CODES.get(type(error).__name__, "UNKNOWN")
    if isinstance(error, ServingError):
        return error.code
    if isinstance(error, FileNotFoundError):
        return "NOT_FOUND"
    return "UNKNOWN"


_OP_ERROR_CODES = {
    "CancelledError": "CANCELLED",
    "InvalidArgumentError": "INVALID_ARGUMENT",
    "DeadlineExceededError": "DEADLINE_EXCEEDED",
    "NotFoundError": "NOT_FOUND",
    "AlreadyExistsError": "ALREADY_EXISTS",
    "PermissionDeniedError": "PERMISSION_DENIED",
    "ResourceExhaustedError": "RESOURCE_EXHAUSTED",
    "FailedPreconditionError": "FAILED_PRECONDITION",
    "AbortedError": "ABORTED",
    "OutOfRangeError": "OUT_OF_RANGE",
    "UnimplementedError": "UNIMPLEMENTED",
    "InternalError": "INTERNAL",
    "UnavailableError": "UNAVAILABLE",
    "DataLossError": "DATA_LOSS",
}


@dataclass
class Servable:
    """One version of one model: its state, its error and, while loaded, its signatures."""

    version: int
    path: str
    state: str = "START"
    error_code: str = "OK"
    error_message: str = ""
    signatures: dict[str, Any] = field(default_factory=dict)
    loaded: Any = None

    def status(self) -> dict[str, Any]:
        """One entry of `model_version_status`."""
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


def load_savedmodel(path: str, tags: list[str]) -> tuple[Any, dict[str, Any]]:
    """Load a SavedModel and its serving signatures (raises what TensorFlow raises)."""
    tf = _tf()
    loaded = tf.saved_model.load(path, tags=tags)
    signatures = dict(loaded.signatures)
    if not signatures:
        raise ServingError("FAILED_PRECONDITION", f"the SavedModel in {path} has no signatures")
    return loaded, signatures


class ModelManager:
    """Polls one model's base path and keeps the aspired versions loaded (load before unload)."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        max_load_retries: int,
        load_retry_interval_s: float,
        tags: list[str],
        loader: Callable[[str, list[str]], tuple[Any, dict[str, Any]]] = load_savedmodel,
    ) -> None:
        self.config = config
        self.max_load_retries = max(0, max_load_retries)
        self.load_retry_interval_s = load_retry_interval_s
        self.tags = tags
        self.loader = loader
        self.servables: dict[int, Servable] = {}
        self._paths: dict[int, str] = {}
        self.lock = threading.Lock()

    @property
    def name(self) -> str:
        """The model name."""
        return self.config.name

    def versions_on_disk(self) -> list[int] | None:
        """Numeric child directories (`00123` is 123); None when the base path cannot be listed."""
        try:
            entries = list(os.scandir(self.config.base_path))
        except OSError as err:
            _log(f"cannot list base path {self.config.base_path} of model {self.name}: {err}")
            return None
        found: dict[int, str] = {}
        for entry in entries:
            if _VERSION_NAME.fullmatch(entry.name) and entry.is_dir():
                found.setdefault(int(entry.name), entry.path)
        self._paths = found
        return sorted(found)

    def poll(self) -> None:
        """One pass: load what the policy aspires and is not loaded, then unload the rest."""
        on_disk = self.versions_on_disk()
        if on_disk is None:
            return
        aspired = self.config.policy.aspired(on_disk)
        for version in sorted(aspired, reverse=True):
            with self.lock:
                current = self.servables.get(version)
                # A version that failed stays END with its error; an unloaded one may come back.
                if current is not None and (current.state != "END" or current.error_code != "OK"):
                    continue
                servable = Servable(version, self._paths[version])
                self.servables[version] = servable
            self._load(servable)
        with self.lock:
            serving_aspired = any(self.servables[v].state == "AVAILABLE" for v in aspired if v in self.servables)
            leaving = [s for v, s in self.servables.items() if s.state == "AVAILABLE" and v not in aspired]
        # Availability first: keep old versions until an aspired one serves (or nothing is aspired).
        if serving_aspired or not aspired:
            for servable in leaving:
                self._unload(servable)

    def _load(self, servable: Servable) -> None:
        servable.state = "LOADING"
        _log(f"loading servable version {{name: {self.name} version: {servable.version}}} from {servable.path}")
        for attempt in range(self.max_load_retries + 1):
            try:
                loaded, signatures = self.loader(servable.path, self.tags)
            except Exception as err:  # noqa: BLE001 - any failure of TensorFlow's loader is a failed load
                code = _status_code(err)
                message = f"{type(err).__name__}: {err}".strip()
                if attempt < self.max_load_retries:
                    _log(f"load of version {servable.version} failed ({message}); retry {attempt + 1}")
                    time.sleep(self.load_retry_interval_s)
                    continue
                with self.lock:
                    servable.state, servable.error_code, servable.error_message = "END", code, message
                _log(f"failed to load servable version {{name: {self.name} version: {servable.version}}}: {message}")
                return
            with self.lock:
                servable.loaded, servable.signatures = loaded, signatures
                servable.state = "AVAILABLE"
            _log(f"successfully loaded servable version {{name: {self.name} version: {servable.version}}}")
            return

    def _unload(self, servable: Servable) -> None:
        with self.lock:
            servable.state = "UNLOADING"
        _log(f"unloading servable version {{name: {self.name} version: {servable.version}}}")
        # Requests in flight hold their own reference to the signature function and finish.
        with self.lock:
            servable.loaded, servable.signatures = None, {}
            servable.state = "END"
        _log(f"done unloading servable version {{name: {self.name} version: {servable.version}}}")

    def has_available(self) -> bool:
        """True once some version serves."""
        with self.lock:
            return any(s.state == "AVAILABLE" for s in self.servables.values())

    def all_failed(self) -> str | None:
        """The error when every version found failed to load and none serves (start-up cannot finish)."""
        with self.lock:
            if not self.servables or any(s.state != "END" or s.error_code == "OK" for s in self.servables.values()):
                return None
            newest = max(self.servables.values(), key=lambda s: s.version)
            return newest.error_message

    def statuses(self, version: int | None) -> list[dict[str, Any]]:
        """Newest first; raises NOT_FOUND like the real status call."""
        with self.lock:
            if version is not None:
                if version not in self.servables:
                    raise ServingError("NOT_FOUND", f"Could not find version {version} of model {self.name}")
                return [self.servables[version].status()]
            if not self.servables:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {self.name}")
            return [self.servables[v].status() for v in sorted(self.servables, reverse=True)]

    def resolve(self, version: int | None, label: str | None, allow_unavailable_labels: bool) -> Servable:
        """The servable a request names: latest AVAILABLE, a pinned version, or a label."""
        with self.lock:
            if label is not None:
                if label not in self.config.labels:
                    raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
                version = self.config.labels[label]
            if version is None:
                available = [v for v, s in self.servables.items() if s.state == "AVAILABLE"]
                if not available:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({self.name})")
                return self.servables[max(available)]
            servable = self.servables.get(version)
            if servable is None or servable.state != "AVAILABLE":
                raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({self.name}, {version})")
            return servable


# ---------------------------------------------------------------- predict and metadata

_DTYPE_NAMES = {
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "string": "DT_STRING",
    "bool": "DT_BOOL",
    "uint8": "DT_UINT8",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "float16": "DT_HALF",
}


def _signature(servable: Servable, name: str) -> Any:
    if name not in servable.signatures:
        raise ServingError("INVALID_ARGUMENT", f'Serving signature name: "{name}" not found in signature def')
    return servable.signatures[name]


def _input_specs(function: Any) -> dict[str, Any]:
    return dict(function.structured_input_signature[1])


def _decode_b64(value: Any) -> Any:
    import base64

    if isinstance(value, dict):
        if set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        raise ServingError("INVALID_ARGUMENT", 'JSON object for a tensor value must be {"b64": ...}')
    if isinstance(value, list):
        return [_decode_b64(item) for item in value]
    return value


def _to_tensor(name: str, spec: Any, value: Any) -> Any:
    import numpy as np

    tf = _tf()
    if spec.dtype == tf.string:
        value = _decode_b64(value)
        try:
            return tf.constant(value, dtype=tf.string)
        except (ValueError, TypeError) as err:
            raise ServingError("INVALID_ARGUMENT", f"input {name!r}: {err}") from None
    if _has_object(value):
        raise ServingError("INVALID_ARGUMENT", f"input {name!r}: JSON objects (b64) are only for string inputs")
    try:
        array = np.asarray(value)
    except ValueError as err:  # ragged nesting
        raise ServingError("INVALID_ARGUMENT", f"input {name!r} is ragged: {err}") from None
    if array.dtype == object:
        raise ServingError("INVALID_ARGUMENT", f"input {name!r} is ragged or mixes types")
    if array.dtype.kind in "US" or (array.dtype.kind == "b" and spec.dtype != tf.bool):
        raise ServingError(
            "INVALID_ARGUMENT", f"input {name!r} has {array.dtype.kind!r} values, expected {spec.dtype.name}"
        )
    if array.dtype.kind == "f" and spec.dtype.is_integer:
        raise ServingError("INVALID_ARGUMENT", f"input {name!r}: float values for an {spec.dtype.name} tensor")
    return tf.constant(array.astype(spec.dtype.as_numpy_dtype))


def _has_object(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    if isinstance(value, list):
        return any(_has_object(item) for item in value[:1])
    return False


def _row_inputs(specs: dict[str, Any], instances: Any) -> dict[str, Any]:
    if not isinstance(instances, list) or not instances:
        raise ServingError("INVALID_ARGUMENT", "'instances' must be a non-empty JSON list")
    keyed = all(isinstance(row, dict) and not set(row) <= {"b64"} for row in instances)
    if keyed:
        names = set(instances[0])
        if any(set(row) != names for row in instances):
            raise ServingError("INVALID_ARGUMENT", "every object in 'instances' must have the same keys")
        columns = {name: [row[name] for row in instances] for name in names}
    elif len(specs) == 1:
        columns = {next(iter(specs)): instances}
    else:
        raise ServingError(
            "INVALID_ARGUMENT", f"the signature has {len(specs)} inputs: each instance must be an object keyed by name"
        )
    return columns


def _columnar_inputs(specs: dict[str, Any], inputs: Any) -> dict[str, Any]:
    if isinstance(inputs, dict) and not set(inputs) <= {"b64"}:
        return inputs
    if len(specs) != 1:
        raise ServingError("INVALID_ARGUMENT", f"the signature has {len(specs)} inputs: 'inputs' must be an object")
    return {next(iter(specs)): inputs}


def predict(servable: Servable, body: dict[str, Any]) -> dict[str, Any]:
    """Row (`instances` -> `predictions`) or columnar (`inputs` -> `outputs`) predict."""
    function = _signature(servable, body.get("signature_name") or DEFAULT_SIGNATURE)
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows and has_columns:
        raise ServingError("INVALID_ARGUMENT", "Not both of 'instances' or 'inputs' can be specified")
    if not has_rows and not has_columns:
        raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
    specs = _input_specs(function)
    columns = _row_inputs(specs, body["instances"]) if has_rows else _columnar_inputs(specs, body["inputs"])
    unknown = set(columns) - set(specs)
    if unknown:
        raise ServingError("INVALID_ARGUMENT", f"input(s) {sorted(unknown)} are not in the signature {sorted(specs)}")
    missing = set(specs) - set(columns)
    if missing:
        raise ServingError("INVALID_ARGUMENT", f"missing input(s) {sorted(missing)}")
    tensors = {name: _to_tensor(name, specs[name], value) for name, value in columns.items()}
    outputs = {name: _jsonable(tensor.numpy()) for name, tensor in function(**tensors).items()}
    if has_columns:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{name: values[i] for name, values in outputs.items()} for i in range(rows)]}


def _jsonable(array: Any) -> Any:
    if array.dtype.kind in "SO":
        return [value.decode("utf-8", "replace") if isinstance(value, bytes) else value for value in array.tolist()]
    return array.tolist()


def _tensor_info(name: str, spec: Any, tensor_name: str) -> dict[str, Any]:
    dims = [] if spec.shape.rank is None else [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape]
    return {
        "dtype": _DTYPE_NAMES.get(spec.dtype.name, f"DT_{spec.dtype.name.upper()}"),
        "tensor_shape": {"dim": dims, "unknown_rank": spec.shape.rank is None},
        "name": tensor_name,
    }


def metadata(model: str, servable: Servable) -> dict[str, Any]:
    """The `/metadata` answer: model_spec and every signature's inputs and outputs."""
    signature_defs = {}
    for signature_name, function in servable.signatures.items():
        inputs = {
            name: _tensor_info(name, spec, f"{signature_name}_{name}:0")
            for name, spec in _input_specs(function).items()
        }
        outputs = {
            name: _tensor_info(name, spec, f"StatefulPartitionedCall:{index}")
            for index, (name, spec) in enumerate(sorted(function.structured_outputs.items()))
        }
        signature_defs[signature_name] = {
            "inputs": inputs,
            "outputs": outputs,
            "method_name": "tensorflow/serving/predict",
            "defaults": {},
        }
    return {
        "model_spec": {"name": model, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": {"signature_def": signature_defs}},
    }


# ---------------------------------------------------------------- REST


class ServingState:
    """Everything the REST handlers read: the managers by model name and a few flags."""

    def __init__(self, managers: dict[str, ModelManager], allow_unavailable_labels: bool) -> None:
        self.managers = managers
        self.allow_unavailable_labels = allow_unavailable_labels

    def manager(self, model: str, *, for_status: bool) -> ModelManager:
        """The model's manager, or the real server's NOT_FOUND text."""
        if model not in self.managers:
            if for_status:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {model}")
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({model})")
        return self.managers[model]


def make_handler(state: ServingState) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to the serving state."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real server's libevent front end
        server_version = "tfship-standin"

        def log_message(self, format: str, *args: Any) -> None:  # the base class signature
            pass

        def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: str, message: str) -> None:
            self._send(HTTP_STATUS.get(code, 500), {"error": message})

        def _route(self) -> re.Match[str] | None:
            path = self.path.split("?", 1)[0]
            if not path.startswith("/v1/"):
                self._send(404, b"<html><body><h1>404 Not Found</h1></body></html>", "text/html")
                return None
            match = _ROUTE.match(path)
            if match is None:
                self._error("INVALID_ARGUMENT", f"Malformed request: {self.command} {path}")
            return match

        def do_GET(self) -> None:
            match = self._route()
            if match is None:
                return
            if match["tail"] not in (None, "/metadata"):
                self._error("INVALID_ARGUMENT", f"Malformed request: GET {self.path}")
                return
            try:
                version = int(match["version"]) if match["version"] else None
                if match["tail"] is None:
                    manager = state.manager(match["model"], for_status=True)
                    self._send(200, {"model_version_status": manager.statuses(version)})
                    return
                manager = state.manager(match["model"], for_status=False)
                servable = manager.resolve(version, match["label"], state.allow_unavailable_labels)
                self._send(200, metadata(manager.name, servable))
            except ServingError as err:
                self._error(err.code, err.message)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            match = self._route()
            if match is None:
                return
            if match["tail"] not in (":predict", ":classify", ":regress"):
                self._error("INVALID_ARGUMENT", f"Malformed request: POST {self.path}")
                return
            try:
                body = json.loads(raw.decode("utf-8"))
                if not isinstance(body, dict):
                    raise ValueError("the document root must be an object")
            except (ValueError, UnicodeDecodeError) as err:
                self._error("INVALID_ARGUMENT", f"JSON Parse error: {err}")
                return
            try:
                manager = state.manager(match["model"], for_status=False)
                version = int(match["version"]) if match["version"] else None
                servable = manager.resolve(version, match["label"], state.allow_unavailable_labels)
                if match["tail"] != ":predict":
                    raise ServingError("UNIMPLEMENTED", f"{match['tail'][1:]} is not served by the stand-in")
                self._send(200, predict(servable, body))
            except ServingError as err:
                self._error(err.code, err.message)
            except Exception as err:  # noqa: BLE001 - TensorFlow's own errors carry their status code
                self._error(_status_code(err), getattr(err, "message", None) or str(err))

    return Handler


# ---------------------------------------------------------------- main


def model_configs(flags: dict[str, Any]) -> list[ModelConfig]:
    """From `--model_config_file` (which overrides name/base path) or `--model_name`/`--model_base_path`."""
    if flags["model_config_file"]:
        with open(flags["model_config_file"], encoding="utf-8") as handle:
            return parse_model_config(handle.read())
    if not flags["model_base_path"]:
        raise ValueError("neither --model_config_file nor --model_base_path is set")
    return [ModelConfig(flags["model_name"], flags["model_base_path"].rstrip("/") or "/", VersionPolicy())]


def main(argv: list[str] | None = None) -> int:
    """Parse flags, load every model's first version, then open the REST port and keep polling."""
    # Like the real binary: SIGTERM does nothing, `docker stop` ends in SIGKILL.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        flags = parse_flags(sys.argv[1:] if argv is None else argv, lambda m: _log(f"WARNING: {m}"))
    except FlagError as err:
        _log(f"ERROR: {err}")
        return EXIT_BAD_FLAG
    try:
        configs = model_configs(flags)
    except (OSError, ValueError) as err:
        _log(f"ERROR: invalid model config: {err}")
        return 1
    if not flags["rest_api_port"]:
        _log("WARNING: --rest_api_port is 0: no REST API (the stand-in serves REST only)")
    managers = {
        config.name: ModelManager(
            config,
            max_load_retries=flags["max_num_load_retries"],
            load_retry_interval_s=flags["load_retry_interval_micros"] / 1e6,
            tags=[tag for tag in flags["saved_model_tags"].split(",") if tag],
        )
        for config in configs
    }
    poll_wait = flags["file_system_poll_wait_seconds"]
    # Start-up: the port stays closed until every model has a version loaded.
    _log(f"waiting for a loaded version of {', '.join(sorted(managers))}; the REST port stays closed until then")
    while True:
        for manager in managers.values():
            if not manager.has_available():
                manager.poll()
        if all(manager.has_available() for manager in managers.values()):
            break
        for manager in managers.values():
            error = manager.all_failed()
            if error:
                _log(f"ERROR: model {manager.name} failed to load at start-up: {error}")
                return 1
        time.sleep(max(poll_wait, 1))
    if poll_wait > 0:

        def keep_polling() -> None:
            while True:
                time.sleep(poll_wait)
                for manager in managers.values():
                    try:
                        manager.poll()
                    except Exception as err:  # noqa: BLE001 - a poll must never kill the poller
                        _log(f"poll of model {manager.name} failed: {err}")

        threading.Thread(target=keep_polling, name="file-system-poll", daemon=True).start()
    if not flags["rest_api_port"]:
        threading.Event().wait()
    server = ThreadingHTTPServer(("0.0.0.0", flags["rest_api_port"]), make_handler(ServingState(
        managers, flags["allow_version_labels_for_unavailable_models"]
    )))  # fmt: skip
    server.daemon_threads = True
    _log(f"Exporting HTTP/REST API at:localhost:{flags['rest_api_port']} ...")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
