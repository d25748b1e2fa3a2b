"""Model state: version discovery, loads (with retries and warmup) off the polling thread, load before
unload, version policies and statuses.

TensorFlow is imported only when first needed, so importing the stand-in stays light.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
    signature_defs: dict[str, Any] = field(default_factory=dict)  # SignatureDef protos, for gRPC metadata
    loaded: Any = None

    def status(self) -> dict[str, Any]:
        """One entry of `model_version_status`."""
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


@dataclass(frozen=True)
class Loaded:
    """What a SavedModel load gives: the object (kept alive), its functions and its SignatureDefs."""

    obj: Any
    signatures: dict[str, Any]
    signature_defs: dict[str, Any]


def load_savedmodel(path: str, tags: list[str]) -> Loaded:
    """Load a SavedModel, its serving functions and the SignatureDefs of its meta graph (raises what TF raises)."""
    tf = _tf()
    from tensorflow.python.saved_model import loader_impl

    loaded = tf.saved_model.load(path, tags=tags)
    signatures = dict(loaded.signatures)
    if not signatures:
        raise ServingError("FAILED_PRECONDITION", f"the SavedModel in {path} has no signatures")
    graphs = loader_impl.parse_saved_model(path).meta_graphs
    graph = next((g for g in graphs if set(g.meta_info_def.tags) == set(tags)), graphs[0])
    return Loaded(loaded, signatures, dict(graph.signature_def))


class LoadQueue:
    """Where loads run, like the real manager's load executor (shared by every model).

    `num_load_threads` 0 (the default after start-up) runs loads one at a time in order, as the real
    AspiredVersionsManager does on its own thread: a version in its retries holds up later loads,
    never polling, status or predictions. N > 0 runs N loads at once. Start-up uses
    num_initial_load_threads (4 per CPU), as ServerCore does.
    """

    def __init__(self, threads: int) -> None:
        self._lock = threading.Lock()
        self._pool = self._make(threads)

    @staticmethod
    def _make(threads: int) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="load")

    def set_threads(self, threads: int) -> None:
        """Later loads use `threads`; loads already queued finish where they are."""
        with self._lock:
            old, self._pool = self._pool, self._make(threads)
        old.shutdown(wait=False)

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` on a load thread; its exceptions are logged, never lost."""

        def run() -> None:
            try:
                job()
            except Exception as err:  # noqa: BLE001 - a load thread must log, not die silently
                log(f"ERROR: load job failed: {type(err).__name__}: {err}")

        with self._lock:
            self._pool.submit(run)


Warmup = Callable[[str, Servable], None]


class ModelManager:
    """Polls one model's base path; aspired versions load on the LoadQueue; load before unload."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        loads: LoadQueue,
        max_load_retries: int,
        load_retry_interval_s: float,
        tags: list[str],
        loader: Callable[[str, list[str]], Loaded] = load_savedmodel,
        warmup: Warmup | None = None,
    ) -> None:
        self.config = config
        self.loads = loads
        self.max_load_retries = max(0, max_load_retries)
        self.load_retry_interval_s = max(0.0, load_retry_interval_s)
        self.tags = tags
        self.loader = loader
        self.warmup = warmup
        self.servables: dict[int, Servable] = {}
        self.retired = False  # removed from the model config: nothing is aspired any more
        self._aspired: set[int] = set()
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
        """One pass: queue loads of aspired versions not loaded, then unload what is no longer aspired."""
        if self.retired:
            aspired: list[int] = []
        else:
            on_disk = self.versions_on_disk()
            if on_disk is None:
                return
            aspired = self.config.policy.aspired(on_disk)
        queued = []
        with self.lock:
            self._aspired = set(aspired)
            for version in sorted(aspired, reverse=True):
                current = self.servables.get(version)
                # A version that failed stays END with its error; an unloaded one may come back.
                if current is not None and (current.state != "END" or current.error_code != "OK"):
                    continue
                self.servables[version] = Servable(version, self._paths[version])
                queued.append(self.servables[version])
        for servable in queued:
            self.loads.submit(lambda servable=servable: self._load(servable))
        self.settle()

    def settle(self) -> None:
        """Unload versions no longer aspired, once an aspired version serves (or nothing is aspired)."""
        with self.lock:
            aspired = self._aspired
            serving_aspired = any(self.servables[v].state == "AVAILABLE" for v in aspired if v in self.servables)
            if not (serving_aspired or not aspired):
                return
            leaving = [s for v, s in self.servables.items() if s.state == "AVAILABLE" and v not in aspired]
            for servable in leaving:  # claimed here, so two settles never unload the same version
                servable.state = "UNLOADING"
        for servable in leaving:
            self._unload(servable)

    def _load(self, servable: Servable) -> None:
        with self.lock:
            servable.state = "LOADING"
        log(f"loading servable version {{name: {self.name} version: {servable.version}}} from {servable.path}")
        for attempt in range(self.max_load_retries + 1):
            try:
                loaded = self.loader(servable.path, self.tags)
                servable.signatures, servable.signature_defs = loaded.signatures, loaded.signature_defs
                if self.warmup is not None:  # still LOADING: no request can reach it yet
                    self.warmup(servable.path, servable)
            except Exception as err:  # noqa: BLE001 - any failure of the loader or the warmup is a failed load
                code = status_code(err)
                message = getattr(err, "message", None) or f"{type(err).__name__}: {err}".strip()
                with self.lock:
                    servable.signatures, servable.signature_defs = {}, {}
                    still_aspired = servable.version in self._aspired
                if attempt < self.max_load_retries and still_aspired:
                    log(
                        f"load of version {servable.version} of model {self.name} failed ({message}); "
                        f"retry {attempt + 1} of {self.max_load_retries}"
                    )
                    time.sleep(self.load_retry_interval_s)
                    continue
                with self.lock:
                    servable.state, servable.error_code, servable.error_message = "END", code, message
                log(f"failed to load servable version {{name: {self.name} version: {servable.version}}}: {message}")
                return
            with self.lock:
                servable.loaded = loaded.obj
                servable.state = "AVAILABLE"
            # TensorFlow and a loaded model are ~450k tracked objects: a full GC pass over them stalls
            # every request for 0.3-0.7 s while JSON decoding allocates. Frozen, they are never scanned.
            gc.freeze()
            log(f"successfully loaded servable version {{name: {self.name} version: {servable.version}}}")
            self.settle()
            return

    def _unload(self, servable: Servable) -> None:
        log(f"unloading servable version {{name: {self.name} version: {servable.version}}}")
        # Requests in flight hold their own reference to the signature function and finish.
        with self.lock:
            servable.loaded, servable.signatures, servable.signature_defs = None, {}, {}
            servable.state = "END"
        # The unloaded model's cycles are frozen too: collect them once here, then freeze the rest again.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        log(f"done unloading servable version {{name: {self.name} version: {servable.version}}}")

    def has_available(self) -> bool:
        """True once some version serves."""
        with self.lock:
            return any(s.state == "AVAILABLE" for s in self.servables.values())

    def version_states(self) -> dict[int, str]:
        """Version -> state, for the label rule."""
        with self.lock:
            return {v: s.state for v, s in self.servables.items()}

    def all_failed(self) -> str | None:
        """The error when every version found failed to load and none serves (start-up cannot finish)."""
        with self.lock:
            if not self.servables or any(s.state != "END" or s.error_code == "OK" for s in self.servables.values()):
                return None
            newest = max(self.servables.values(), key=lambda s: s.version)
            return f"{{name: {self.name} version: {newest.version}}} due to error: {newest.error_message}"

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

    def servable(self, version: int | None) -> Servable:
        """A handle on the latest AVAILABLE version, or the given one; else the real NOT_FOUND text.

        The handle is a copy taken under the lock: an unload meanwhile clears the servable's
        signatures, and a request in flight must still finish with the ones it resolved.
        """
        with self.lock:
            if version is None:
                available = [v for v, s in self.servables.items() if s.state == "AVAILABLE"]
                if not available:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({self.name})")
                return dataclasses.replace(self.servables[max(available)])
            servable = self.servables.get(version)
            if servable is None or servable.state != "AVAILABLE":
                raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({self.name}, {version})")
            return dataclasses.replace(servable)
