"""Model state: version discovery, load before unload, version policies, labels and statuses.

TensorFlow is imported only when first needed, so importing the stand-in stays light.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving_standin.model_config import ModelConfig

STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")
_VERSION_NAME = re.compile(r"[0-9]+")


class ServingError(Exception):
    """An error with a TF status code name; the REST layer turns it into `{"error": ...}`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def log(message: str) -> None:
    """One timestamped line on stderr (the container log)."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} standin: {message}", file=sys.stderr, flush=True)


def _tf() -> Any:
    import tensorflow as tf

    return tf


def status_code(error: BaseException) -> str:
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
            log(f"cannot list base path {self.config.base_path} of model {self.name}: {err}")
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
        log(f"loading servable version {{name: {self.name} version: {servable.version}}} from {servable.path}")
        for attempt in range(self.max_load_retries + 1):
            try:
                loaded, signatures = self.loader(servable.path, self.tags)
            except Exception as err:  # noqa: BLE001 - any failure of TensorFlow's loader is a failed load
                code = status_code(err)
                message = f"{type(err).__name__}: {err}".strip()
                if attempt < self.max_load_retries:
                    log(f"load of version {servable.version} failed ({message}); retry {attempt + 1}")
                    time.sleep(self.load_retry_interval_s)
                    continue
                with self.lock:
                    servable.state, servable.error_code, servable.error_message = "END", code, message
                log(f"failed to load servable version {{name: {self.name} version: {servable.version}}}: {message}")
                return
            with self.lock:
                servable.loaded, servable.signatures = loaded, signatures
                servable.state = "AVAILABLE"
            log(f"successfully loaded servable version {{name: {self.name} version: {servable.version}}}")
            return

    def _unload(self, servable: Servable) -> None:
        with self.lock:
            servable.state = "UNLOADING"
        log(f"unloading servable version {{name: {self.name} version: {servable.version}}}")
        # Requests in flight hold their own reference to the signature function and finish.
        with self.lock:
            servable.loaded, servable.signatures = None, {}
            servable.state = "END"
        log(f"done unloading servable version {{name: {self.name} version: {servable.version}}}")

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
