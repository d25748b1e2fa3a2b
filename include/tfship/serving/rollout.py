"""One host's part of a rolling release, served through TF Serving's version labels.

A host serves what its serving dir's model config says (`serving.json` and `models.config`, a
`specific` version policy with the labels `stable` and `canary`). Its release goes:
load the new version next to the stable one (`bring_in`; the server replays the version's warmup
before it is AVAILABLE), point `canary` at it, check it through the label, then `promote` it
(stable and canary on it, the old version unloaded) or `revert` (the old version alone and stable,
the new one moved to `.rejected/`). Each change goes to the server through
HandleReloadConfigRequest first and to the files second: a refused config leaves both as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.constants import ServingLabel
from tfship.release.serving_dir import ModelVersion, ServedVersions, ServingDir
from tfship.serving.client import ServingError
from tfship.serving.server_config import render_model_config

# A loaded TensorFlow model takes more memory than its files: graph, runtime buffers, warmup.
FOOTPRINT_FACTOR = 3.0
log = logging.getLogger(__name__)


class MemoryRefused(ServingError):
    """The host's memory limit cannot hold the version in service and the new one side by side."""


@dataclass(frozen=True)
class HostMemory:
    """A serving container's memory: its limit, use before the new version, the peak with two loaded."""

    limit_bytes: int
    before_bytes: int
    peak_bytes: int | None = None
    estimate_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in MB for people."""
        mb = {
            key: round(getattr(self, key) / 1e6, 1) if getattr(self, key) is not None else None
            for key in ("limit_bytes", "before_bytes", "peak_bytes", "estimate_bytes")
        }
        return {key.replace("_bytes", "_mb"): value for key, value in mb.items()}


def container_memory(api: Any, container_id: str) -> tuple[int, int]:
    """(usage, limit) in bytes of a running container, from the engine's stats."""
    stats = api.stats(container_id, stream=False).get("memory_stats") or {}
    return int(stats.get("usage") or 0), int(stats.get("limit") or 0)


def footprint_estimate(version_dir: Path) -> int:
    """About what loading a version adds to the server's memory: its files times FOOTPRINT_FACTOR."""
    size = sum(path.stat().st_size for path in version_dir.rglob("*") if path.is_file())
    return int(size * FOOTPRINT_FACTOR)


def check_memory(host: str, version: int, version_dir: Path, usage: int, limit: int, stable: int | None) -> int:
    """Refuse a host whose limit cannot hold the stable version and `version` together; return the estimate."""
    estimate = footprint_estimate(version_dir)
    if limit and usage + estimate > limit:
        serving = f"with version {stable} loaded" if stable is not None else "now"
        raise MemoryRefused(
            f"host {host}: the container's memory limit of {limit / 1e6:.0f} MB cannot hold two versions: it uses "
            f"{usage / 1e6:.0f} MB {serving} and version {version} needs about {estimate / 1e6:.0f} MB more "
            f"({FOOTPRINT_FACTOR:g}x its files); raise the limit (deploy memory_limit) or free the host"
        )
    return estimate


class LabelledServing:
    """A host's served versions and labels, changed on the server (reload) and in its serving dir."""

    def __init__(self, serving_dir: ServingDir, model: str, reload: Callable[[str], tuple[int, dict[str, Any]]]):
        self.serving_dir, self.model, self.reload = serving_dir, model, reload

    def current(self) -> ServedVersions | None:
        """What the host was last told to serve (None before its first labelled release)."""
        return self.serving_dir.served()

    def current_stable(self) -> ModelVersion | None:
        """The version the `stable` label points at now."""
        served = self.current()
        return served.label(ServingLabel.STABLE) if served is not None else None

    def stable_before(self, version: int) -> ModelVersion | None:
        """The version serving as stable before `version` arrives: the label, else the newest lower version."""
        served = self.current()
        if served is not None and served.label(ServingLabel.STABLE) is not None:
            return served.label(ServingLabel.STABLE)
        lower = [v for v in self.serving_dir.versions() if v < version]
        return lower[-1] if lower else None

    def write(self, served: ServedVersions) -> None:
        """Only the files: what a container that starts now will read."""
        self.serving_dir.write_served(
            served, render_model_config(self.model, policy="specific", versions=served.versions, labels=served.labels)
        )

    def apply(self, served: ServedVersions) -> None:
        """Tell the running server, then keep it in the files; a refusal raises with the server's message."""
        text = render_model_config(self.model, policy="specific", versions=served.versions, labels=served.labels)
        code, body = self.reload(text)
        if code != 200:
            raise ServingError(f"the server refused the model config {served.to_dict()}: {body.get('error', body)}")
        self.write(served)


def side_by_side(version: int, stable: int | None) -> ServedVersions:
    """Both loaded, clients' `stable` still on the old version."""
    if stable is None:
        return ServedVersions((version,), {})
    return ServedVersions((stable, version), {ServingLabel.STABLE: stable})


def with_canary(version: int, stable: int | None) -> ServedVersions:
    """Both loaded, `canary` on the new version (it must be AVAILABLE by now)."""
    base = side_by_side(version, stable)
    return ServedVersions(base.versions, {**base.labels, ServingLabel.CANARY: version})


def promoted(version: int) -> ServedVersions:
    """The new version alone, stable and canary on it (the old one unloaded: its memory is freed)."""
    return ServedVersions((version,), {ServingLabel.STABLE: version, ServingLabel.CANARY: version})


def reverted(stable: int) -> ServedVersions:
    """The old version alone and stable again."""
    return ServedVersions((stable,), {ServingLabel.STABLE: stable})


def wait_for_label(client: Any, label: str, version: int, timeout_s: float, poll_s: float = 0.2) -> None:
    """Block until `label` answers with `version` (the server applied the config)."""
    deadline = time.monotonic() + timeout_s
    while client.labelled_version(label) != int(version):
        if time.monotonic() > deadline:
            raise ServingError(f"label {label} does not point at version {version} after {timeout_s:.0f}s")
        time.sleep(poll_s)


@dataclass(frozen=True)
class HostRelease:
    """What `release_host` hands on for one host: where its release ended, and what it did on the way."""

    host: str
    serving_dir: str
    version: int
    order: int
    step: str
    previous: int | None = None
    labels: dict[str, int] | None = None
    deploy: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    drained: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {key: getattr(self, key) for key in self.__dataclass_fields__} | {"version": int(self.version)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostRelease:
        """Back from `to_dict`."""
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


class HostRollout:
    """The steps of one host's release, over its container, its serving dir and its server's two APIs.

    `load_beside` keeps or (re)creates the container and loads the new version next to the stable
    one; `canary` checks the version through the `canary` label; then `promote` or `revert`.
    """

    def __init__(
        self,
        *,
        api: Any,
        spec: Any,
        serving_dir: ServingDir,
        version: int,
        rest: Any,
        grpc: Any,
        canary_policy: Any,
        available_timeout_s: float,
        log: logging.Logger = log,
    ) -> None:
        self.api, self.spec, self.serving_dir, self.version = api, spec, serving_dir, int(version)
        self.rest, self.grpc, self.policy, self.timeout_s, self.log = (
            rest,
            grpc,
            canary_policy,
            available_timeout_s,
            log,
        )
        self.labelled = LabelledServing(serving_dir, spec.model, grpc.reload_config)

    def _running_same_spec(self) -> dict[str, Any] | None:
        from tfship.serving.container import SPEC_HASH_LABEL, find_containers

        wanted = self.spec.spec_hash()
        for container in find_containers(self.api, self.spec):
            labels = container.get("Labels") or {}
            if container.get("State") == "running" and labels.get(SPEC_HASH_LABEL) == wanted:
                return container
        return None

    def load_beside(self, stable: int | None) -> tuple[dict[str, Any], HostMemory]:
        """The container kept or (re)created, the new version AVAILABLE next to `stable`; memory checked."""
        from tfship.serving.container import DeployResult, container_alive_check, parse_memory, reconcile_container

        kept = self._running_same_spec()
        new_dir = self.serving_dir.version_dir(self.version)
        if kept is not None:
            usage, limit = container_memory(self.api, kept["Id"])
            estimate = check_memory(self.spec.host, self.version, new_dir, usage, limit, stable)
            self.labelled.apply(side_by_side(self.version, stable))
        else:
            limit = parse_memory(self.spec.memory_limit)
            old = footprint_estimate(self.serving_dir.version_dir(stable)) if stable is not None else 0
            estimate = check_memory(self.spec.host, self.version, new_dir, old, limit, stable)
            self.labelled.write(side_by_side(self.version, stable))  # what the new container reads at start
            usage = 0
        action = reconcile_container(self.api, self.spec)
        downtime = None
        if kept is None:
            answered = self.rest.wait_until_answering(
                timeout_s=self.timeout_s, check_alive=container_alive_check(self.api, action.container_id)
            )
            downtime = round(answered - action.stopped_at, 2) if action.stopped_at is not None else None
        started = time.monotonic()
        # A container that dies meanwhile (OOM, someone stopping it) fails the wait at once, with its log.
        alive = container_alive_check(self.api, action.container_id)
        self.rest.wait_until_available(self.version, timeout_s=self.timeout_s, check_alive=alive)
        peak, limit_now = container_memory(self.api, action.container_id)
        memory = HostMemory(limit_now or limit, usage, peak, estimate)
        self.log.info(
            "host %s: version %d AVAILABLE beside %s; memory %s", self.spec.host, self.version, stable, memory.to_dict()
        )
        deploy = DeployResult(
            self.spec.host,
            str(self.serving_dir.path),
            self.version,
            self.spec.image,
            self.rest.base_url,
            action,
            downtime,
            round(time.monotonic() - started, 2),
        )
        return deploy.to_dict(), memory

    def canary(self, canary_set: Any) -> Any:
        """The canary set sent to the `canary` label once it points at the new version."""
        from tfship.serving.canary import run_canary

        self.labelled.apply(with_canary(self.version, self.labelled.current_stable()))
        wait_for_label(self.rest, ServingLabel.CANARY, self.version, timeout_s=60)
        return run_canary(
            self.rest.base_url,
            self.spec.model,
            self.version,
            canary_set,
            self.policy,
            label=ServingLabel.CANARY,
            grpc_target=self.grpc.target,
        )

    def promote(self) -> dict[str, int]:
        """`stable` and `canary` on the new version; the old one unloaded."""
        served = promoted(self.version)
        self.labelled.apply(served)
        return dict(served.labels)

    def revert(self, stable: int | None) -> tuple[dict[str, int], dict[str, Any]]:
        """The old version alone and stable again, the new one in `.rejected/`, the old one checked to answer."""
        from tfship.serving.canary import CanaryError
        from tfship.serving.rollback import RollbackResult, verify_serves

        if stable is None:
            moved = self.serving_dir.reject(self.version)
            raise CanaryError(
                f"version {self.version} was the first on host {self.spec.host}: moved to {moved}, "
                "nothing is left to serve"
            )
        served = reverted(stable)
        self.labelled.apply(served)
        moved = self.serving_dir.reject(self.version)
        previous_canary = verify_serves(
            self.serving_dir, self.rest, stable, timeout_s=self.timeout_s, policy=self.policy
        )
        return dict(served.labels), RollbackResult((self.version,), (str(moved),), stable, previous_canary).to_dict()
