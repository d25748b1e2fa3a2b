"""ServerCore's part: the model config in force, one manager per model, the version labels and
request routing (model spec -> servable), shared by REST and gRPC.

A config is applied as ServerCore::ReloadConfig does it (TF Serving 2.20): validate, then check
every version label (a label may point only at an AVAILABLE version, unless
--allow_version_labels_for_unavailable_models and the label is not assigned to another version
yet), and only then add, update or retire models. A config that fails leaves the one in force.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from serving_standin.model_config import ModelConfig, parse_model_config
from serving_standin.models import ModelManager, Servable, ServingError, log

T = TypeVar("T")


class ServingCore:
    """Managers by model name, the label map, config reloads and request routing."""

    def __init__(
        self,
        make_manager: Callable[[ModelConfig], ModelManager],
        *,
        allow_unavailable_labels: bool,
        predict_threads: int,
        predict_timeout_ms: int,
    ) -> None:
        self.make_manager = make_manager
        self.allow_unavailable_labels = allow_unavailable_labels
        self.managers: dict[str, ModelManager] = {}
        self.labels: dict[str, dict[str, int]] | None = None  # None until the first config applies
        self._config_lock = threading.Lock()  # one reload at a time, as ServerCore's config_mu_
        self._lock = threading.Lock()
        self._predicts = ThreadPoolExecutor(max_workers=max(1, predict_threads), thread_name_prefix="predict")
        self.predict_timeout_s = predict_timeout_ms / 1000 if predict_timeout_ms > 0 else None

    # ------------------------------------------------------------------ config

    def reload_config(self, configs: list[ModelConfig], *, wait_timeout_s: float | None = None) -> None:
        """Apply a model config list; raises ServingError (FAILED_PRECONDITION for a label rule) and
        leaves the previous config in force. Waits for models new in this config, as the real one."""
        with self._config_lock:
            first = self.labels is None
            labels = self._checked_labels(configs)
            with self._lock:
                self.labels = labels
                new = [c.name for c in configs if c.name not in self.managers or self.managers[c.name].retired]
                for config in configs:
                    manager = self.managers.get(config.name)
                    if manager is None:
                        self.managers[config.name] = self.make_manager(config)
                    else:
                        manager.config, manager.retired = config, False
                leaving = [m for name, m in self.managers.items() if name not in {c.name for c in configs}]
                for manager in leaving:
                    manager.retired = True
                touched = [self.managers[c.name] for c in configs] + leaving
            log(f"Adding/updating models: {', '.join(c.name for c in configs) or '(none)'}")
            for manager in touched:
                manager.poll()
            if not first and new:
                self.wait_until_available(new, timeout_s=wait_timeout_s)
            log("Finished adding/updating models")

    def reload_config_text(self, text: str) -> None:
        """reload_config from ModelServerConfig text; a config that does not parse is INVALID_ARGUMENT."""
        try:
            configs = parse_model_config(text)
        except ValueError as err:
            raise ServingError("INVALID_ARGUMENT", str(err)) from None
        self.reload_config(configs)

    def _checked_labels(self, configs: list[ModelConfig]) -> dict[str, dict[str, int]]:
        """UpdateModelVersionLabelMap: the new label map, or FAILED_PRECONDITION naming the version."""
        old = self.labels or {}
        new: dict[str, dict[str, int]] = {}
        for config in configs:
            manager = self.managers.get(config.name)
            states = manager.version_states() if manager is not None else {}
            for label, version in config.labels.items():
                allowed = False
                if self.allow_unavailable_labels:
                    existing = old.get(config.name, {}).get(label)
                    allowed = existing is None or existing == version
                if not allowed and states.get(version) != "AVAILABLE":
                    raise ServingError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model {config.name}, "
                        "which is not currently available for inference",
                    )
                new.setdefault(config.name, {})[label] = version
        return new

    def wait_until_available(self, models: list[str], *, timeout_s: float | None = None) -> None:
        """Block until each model serves a version; UNKNOWN naming the ones that failed (as ServerCore)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            managers = [self.managers[name] for name in models]
            pending = [m for m in managers if not m.has_available()]
            failed = [error for m in pending if (error := m.all_failed())]
            if failed and len(failed) == len(pending):
                joined = "".join(f"{{{error}}}, " for error in failed)
                raise ServingError("UNKNOWN", f"{len(failed)} model(s) did not become available: {{{joined}}}")
            if not pending:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise ServingError("DEADLINE_EXCEEDED", f"models {[m.name for m in pending]} not available in time")
            time.sleep(0.05)

    def poll_all(self) -> None:
        """One file-system poll of every model (the source's periodic poll)."""
        with self._lock:
            managers = list(self.managers.values())
        for manager in managers:
            try:
                manager.poll()
            except Exception as err:  # noqa: BLE001 - a poll must never kill the poller
                log(f"poll of model {manager.name} failed: {err}")

    # ----------------------------------------------------------------- routing

    def statuses(self, model: str, version: int | None) -> list[dict[str, Any]]:
        """GetModelStatus: the label, if any, is ignored (as the real server does)."""
        manager = self.managers.get(model)
        if manager is None:
            if version is not None:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {model}")
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {model}")
        return manager.statuses(version)

    def resolve(self, model: str, version: int | None, label: str | None) -> Servable:
        """ServableRequestFromModelSpec + GetServableHandle: a label first, then the AVAILABLE servable."""
        if label is not None:
            labels = self.labels
            if labels is None:
                raise ServingError("UNAVAILABLE", f"Model labels does not init yet.{label}")
            if label not in labels.get(model, {}):
                raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            version = labels[model][label]
        manager = self.managers.get(model)
        if manager is None or manager.retired:
            request = f"Latest({model})" if version is None else f"Specific({model}, {version})"
            raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
        return manager.servable(version)

    def run_predict(self, call: Callable[[], T]) -> T:
        """Run a REST predict on the predict pool under --rest_api_timeout_in_ms (DEADLINE_EXCEEDED, 504).

        TensorFlow cannot cancel a running function: the answer goes out at the deadline, the
        computation finishes in the background, as a cancelled Session::Run would not.
        """
        future = self._predicts.submit(call)
        try:
            return future.result(timeout=self.predict_timeout_s)
        except FutureTimeout:
            raise ServingError("DEADLINE_EXCEEDED", "Timed out waiting for notification") from None
