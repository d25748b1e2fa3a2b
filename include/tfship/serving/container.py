"""The TF Serving container: its spec and the spec's hash, reconciliation, and the choice of image.

Pure library: the Docker client is passed in (the low-level `docker.APIClient`, which is what
the docker provider's `DockerHook.get_conn()` returns).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfship.constants import ContainerChange
from tfship.errors import ConfigError
from tfship.paths import check_name
from tfship.release.serving_dir import MODEL_CONFIG
from tfship.serving.client import ServingError
from tfship.serving.server_config import validate_flags

# The pinned real image; where it is not present locally the stand-in is used (see choose_image).
REAL_IMAGE = "tensorflow/serving:2.20.0"  # the contract (TFSERVING_CONTRACT.md) was read from 2.20
STANDIN_REPOSITORY = "tfship/tfserving-standin"
CONTAINER_PREFIX = "tfserving-"
SPEC_HASH_LABEL = "tfship.spec-hash"
MODEL_LABEL = "tfship.model"
MANAGED_LABEL = "tfship.managed"
HOST_LABEL = "tfship.host"
NETWORK_LABEL = "tfship.network"
MANAGED_VALUE = "tfserving"
CONFIG_MOUNT = "/etc/tfship/models.config"
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingSpec:
    """Everything that defines the serving container; its hash decides whether to recreate it."""

    model: str
    serving_dir: str
    host: str = "local"  # one container per model and host; several "hosts" may share one engine (tests, compose)
    image: str = REAL_IMAGE
    grpc_port: int = 8500
    rest_port: int = 8501
    poll_wait_s: int = 1
    model_config_file: str | None = None
    # Serve from the serving dir's own model config (version policy and stable/canary labels), changed
    # at run time through ModelService.HandleReloadConfigRequest: the container stays when labels move.
    labelled: bool = False
    extra_flags: tuple[str, ...] = ()
    restart_policy: str = "unless-stopped"
    memory_limit: str | None = "2g"
    # "host", "container:<name>" (share that container's network: a worker in a container) or a network.
    network_mode: str = "host"
    # A Docker volume whose root is the serving dir: mounted instead of the path (the worker runs in a
    # container, so its paths mean nothing to the engine).
    serving_volume: str = ""
    # Nothing mounted: the caller copies the serving dir into the created container (`copy_into`).
    copy_in: bool = False
    config_digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        check_name("model", self.model)
        if not self.serving_dir.startswith("/"):
            raise ConfigError(f"serving_dir {self.serving_dir!r} must be an absolute path on the serving host")
        if not self.image:
            raise ConfigError("image must name a TF Serving image")
        for name in ("grpc_port", "rest_port"):
            port = getattr(self, name)
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError(f"{name}={port!r} is not a TCP port")
        if self.grpc_port == self.rest_port:
            raise ConfigError(f"grpc_port and rest_port are both {self.rest_port}")
        if not isinstance(self.poll_wait_s, int) or self.poll_wait_s < 1:
            raise ConfigError(f"poll_wait_s={self.poll_wait_s!r}: hot reload needs a poll of at least 1 s")
        if self.restart_policy not in RESTART_POLICIES:
            raise ConfigError(f"restart_policy {self.restart_policy!r} is not one of {RESTART_POLICIES}")
        if self.labelled and self.model_config_file:
            raise ConfigError("a labelled spec serves the serving dir's own model config: give no model_config_file")
        if self.model_config_file is not None and not self.model_config_file.startswith("/"):
            raise ConfigError(f"model_config_file {self.model_config_file!r} must be an absolute path")
        object.__setattr__(self, "extra_flags", validate_flags(self.extra_flags))
        if self.model_config_file and not self.config_digest:
            # The server reads the file once at start: new content needs a new container.
            try:
                content = Path(self.model_config_file).read_bytes()
            except OSError as err:
                raise ConfigError(f"model_config_file {self.model_config_file!r} cannot be read: {err}") from None
            object.__setattr__(self, "config_digest", hashlib.sha256(content).hexdigest())

    @property
    def container_name(self) -> str:
        """`tfserving-<model>` on the local host, `tfserving-<model>-<host>` for a named one."""
        suffix = "" if self.host in ("", "local") else f"-{self.host}"
        return f"{CONTAINER_PREFIX}{self.model}{suffix}"

    @property
    def mount_path(self) -> str:
        """Where the serving directory appears in the container (MODEL_BASE_PATH/MODEL_NAME)."""
        return f"/models/{self.model}"

    def command(self) -> list[str]:
        """Arguments appended to the image's entrypoint (a later copy of a flag wins)."""
        flags = [
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            f"--file_system_poll_wait_seconds={self.poll_wait_s}",
        ]
        if self.model_config_file:
            flags.append(f"--model_config_file={CONFIG_MOUNT}")
        if self.labelled:
            # Only a label not yet assigned may name a loading version: at start-up every label is new.
            flags += [
                f"--model_config_file={self.mount_path}/{MODEL_CONFIG}",
                "--allow_version_labels_for_unavailable_models=true",
            ]
        return [*flags, *self.extra_flags]

    def environment(self) -> dict[str, str]:
        """The entrypoint builds --model_name and --model_base_path from these."""
        return {"MODEL_NAME": self.model, "MODEL_BASE_PATH": "/models"}

    def binds(self) -> dict[str, dict[str, str]]:
        """Read-only mounts: the serving directory, and the model config file when given."""
        if self.copy_in:
            return {}
        binds = {self.serving_volume or self.serving_dir: {"bind": self.mount_path, "mode": "ro"}}
        if self.model_config_file:
            binds[self.model_config_file] = {"bind": CONFIG_MOUNT, "mode": "ro"}
        return binds

    def spec_hash(self) -> str:
        """sha256 over image, flags, environment, mounts, ports and limits (and the config file's content)."""
        fields = asdict(self)
        fields.update(command=self.command(), environment=self.environment(), binds=self.binds())
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()

    @property
    def network_owner(self) -> str:
        """The container whose network namespace this one joins (`container:<name>`), else ""."""
        kind, _, owner = self.network_mode.partition(":")
        return owner if kind == "container" else ""

    def labels(self) -> dict[str, str]:
        """Labels that find the container again (model, managed, the network it shares) and tell its spec (hash)."""
        labels = {
            SPEC_HASH_LABEL: self.spec_hash(),
            MODEL_LABEL: self.model,
            HOST_LABEL: self.host or "local",
            MANAGED_LABEL: MANAGED_VALUE,
        }
        if self.network_owner:
            # Whoever removes that container (make stack-down) finds this one by it.
            labels[NETWORK_LABEL] = self.network_mode
        return labels

    def create_kwargs(self, api: Any) -> dict[str, Any]:
        """Arguments for `APIClient.create_container`."""
        host_config: dict[str, Any] = {
            "binds": self.binds(),
            "network_mode": self.network_mode,
            "restart_policy": {"Name": self.restart_policy},
        }
        if self.memory_limit:
            host_config["mem_limit"] = self.memory_limit
        ports: list[int] = []
        if self.network_mode != "host" and not self.network_owner:
            host_config["port_bindings"] = {8500: self.grpc_port, 8501: self.rest_port}
            ports = [8500, 8501]
        return {
            "image": self.image,
            "name": self.container_name,
            "command": self.command(),
            "environment": self.environment(),
            "labels": self.labels(),
            "ports": ports,
            "host_config": api.create_host_config(**host_config),
        }


def worker_network_mode(worker_container: str) -> str:
    """The network of the TF Serving containers a worker starts: its own container's, else the host's."""
    return f"container:{worker_container}" if worker_container else "host"


def copy_into(api: Any, container_id: str, local_dir: Path, mount_path: str) -> None:
    """Copy `local_dir` into a created (not started) container at `mount_path`, through the engine's API.

    For a worker that runs in a container itself: its paths mean nothing to the engine, so nothing
    is bound; the files travel as a tar stream (spooled to disk beside `local_dir`, never in memory).
    """
    import tarfile
    import tempfile

    parent, name = mount_path.rstrip("/").rsplit("/", 1)
    with tempfile.TemporaryFile(dir=local_dir.parent) as spool:
        with tarfile.open(fileobj=spool, mode="w") as archive:
            archive.add(local_dir, arcname=name)
        spool.seek(0)
        if not api.put_archive(container_id, parent or "/", spool):
            raise ServingError(f"copying {local_dir} into container {container_id[:12]} at {mount_path} failed")


# ---------------------------------------------------------------- the container


@dataclass(frozen=True)
class ContainerAction:
    """What reconciliation did: kept, created or recreated, and why."""

    action: ContainerChange
    container_id: str
    name: str
    spec_hash: str
    reason: str
    removed: tuple[str, ...] = ()
    stopped_at: float | None = None  # monotonic time the old container stopped serving

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (without the monotonic timestamp)."""
        data = asdict(self)
        data.pop("stopped_at")
        data.update(action=str(self.action), removed=list(self.removed))
        return data


def find_containers(api: Any, spec: ServingSpec) -> list[dict[str, Any]]:
    """Every container with our name or our model's labels, running or not (leftovers included)."""
    by_name = api.containers(all=True, filters={"name": f"^/{spec.container_name}$"})
    by_label = api.containers(
        all=True,
        filters={
            "label": [
                f"{MODEL_LABEL}={spec.model}",
                f"{HOST_LABEL}={spec.host or 'local'}",
                f"{MANAGED_LABEL}={MANAGED_VALUE}",
            ]
        },
    )
    found: dict[str, dict[str, Any]] = {}
    for container in [*by_name, *by_label]:
        # The name filter is a regex on the engine side; check the exact name here too.
        names = container.get("Names") or []
        if container in by_name and f"/{spec.container_name}" not in names:
            continue
        found[container["Id"]] = container
    return list(found.values())


def reconcile_container(api: Any, spec: ServingSpec, *, stop_timeout_s: int = 2) -> ContainerAction:
    """Keep the container if its spec hash matches and it runs; otherwise remove what is there and create it."""
    wanted = spec.spec_hash()
    existing = find_containers(api, spec)
    named = [c for c in existing if f"/{spec.container_name}" in (c.get("Names") or [])]
    for container in named:
        labels = container.get("Labels") or {}
        if labels.get(MANAGED_LABEL) != MANAGED_VALUE:
            raise ServingError(
                f"a container named {spec.container_name} ({container['Id'][:12]}) exists without the label "
                f"{MANAGED_LABEL}={MANAGED_VALUE}: it is not ours, remove or rename it"
            )
    current = named[0] if named else None
    others = [c for c in existing if current is None or c["Id"] != current["Id"]]
    running = current is not None and current.get("State") == "running"
    same_spec = current is not None and current["Labels"].get(SPEC_HASH_LABEL) == wanted
    orphaned = _network_owner_restarted(api, spec, current) if running and same_spec else None
    if running and same_spec and orphaned is None:
        removed = tuple(_remove(api, c, stop_timeout_s) for c in others)
        return ContainerAction(
            ContainerChange.KEPT, current["Id"], spec.container_name, wanted, "same spec, running", removed
        )
    if current is None:
        reason = "no container yet" if not others else "only leftovers of an interrupted deploy"
    elif current.get("State") != "running":
        reason = f"container was {current.get('State')} ({current.get('Status', '')})"
    elif orphaned is not None:
        reason = orphaned
    else:
        reason = f"spec changed ({current['Labels'].get(SPEC_HASH_LABEL, 'no hash')[:12]} -> {wanted[:12]})"
    removed = tuple(_remove(api, c, stop_timeout_s) for c in ([current] if current else []) + others)
    stopped_at = time.monotonic() if running else None
    created = api.create_container(**spec.create_kwargs(api))
    api.start(created["Id"])
    action = ContainerChange.RECREATED if current is not None else ContainerChange.CREATED
    log.info("%s container %s (%s): %s", action, spec.container_name, created["Id"][:12], reason)
    return ContainerAction(action, created["Id"], spec.container_name, wanted, reason, removed, stopped_at)


def _started_ns(timestamp: str) -> int:
    """The engine's RFC 3339 StartedAt (nanoseconds, trailing zeros trimmed) as integer nanoseconds, UTC."""
    stamp, _, fraction = timestamp.rstrip("Z").partition(".")
    seconds = datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.UTC).timestamp()
    return int(seconds) * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])


def _network_owner_restarted(api: Any, spec: ServingSpec, current: dict[str, Any]) -> str | None:
    """Why a running container in another container's network must be recreated, or None.

    A container started with network_mode `container:<owner>` keeps the namespace it joined. When the
    owner (the serving host's worker) restarts, it gets a new namespace and the old one loses its
    interfaces: TF Serving still runs but nothing can reach it. Its start time then precedes the owner's.
    """
    owner = spec.network_owner
    if not owner:
        return None
    try:
        owner_state = api.inspect_container(owner)["State"]
    except Exception as err:  # the engine's NotFound or another API error
        raise ServingError(
            f"TF Serving joins the network of container {owner}, which cannot be inspected: {err}"
        ) from err
    ours = api.inspect_container(current["Id"])["State"]
    if _started_ns(ours["StartedAt"]) < _started_ns(owner_state["StartedAt"]):
        return f"its network's container {owner} restarted after it (the namespace it joined is gone)"
    return None


def container_alive_check(api: Any, container_id: str) -> Callable[[], None]:
    """A callable that raises with the container's last log lines once it is no longer running."""

    def check() -> None:
        state = api.inspect_container(container_id)["State"]
        if not state.get("Running") and not state.get("Restarting"):
            logs = api.logs(container_id, tail=30).decode("utf-8", "replace")
            raise ServingError(
                f"serving container {container_id[:12]} is {state.get('Status')} "
                f"(exit {state.get('ExitCode')}):\n{logs}"
            )

    return check


def _remove(api: Any, container: dict[str, Any], stop_timeout_s: int) -> str:
    """Stop (TF Serving ignores SIGTERM: the timeout ends in SIGKILL) and remove one container."""
    if container.get("State") in ("running", "restarting", "paused"):
        api.stop(container["Id"], timeout=stop_timeout_s)
    api.remove_container(container["Id"], force=True)
    log.info("removed container %s (%s)", (container.get("Names") or ["?"])[0], container["Id"][:12])
    return container["Id"]


def choose_image(api: Any, requested: str | None = None, *, build_standin: Callable[[], str] | None = None) -> str:
    """The requested image, else the real pinned image if present locally, else the stand-in (built if needed)."""
    if requested:
        return requested
    if api.images(name=REAL_IMAGE):
        log.warning("TF SERVING IMAGE: the real %s (present locally)", REAL_IMAGE)
        return REAL_IMAGE
    if build_standin is None:
        raise ServingError(f"{REAL_IMAGE} is not present locally and no stand-in builder was given")
    tag = build_standin()
    log.warning("TF SERVING IMAGE: %s is not present here: using the STAND-IN %s", REAL_IMAGE, tag)
    return tag


@dataclass(frozen=True)
class DeployResult:
    """What `deploy_serving` hands on for one host: the container change and the version now AVAILABLE."""

    host: str
    serving_dir: str
    version: int
    image: str
    url: str
    container: ContainerAction
    downtime_s: float | None = None  # set when a serving container was replaced
    available_after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Flat and JSON-ready: the container's fields next to the host's."""
        data = {key: value for key, value in asdict(self).items() if key != "container"}
        data.update(self.container.to_dict())
        data["version"] = int(self.version)
        return {key: value for key, value in data.items() if value is not None or key == "available_after_s"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeployResult:
        """Back from `to_dict`."""
        container = ContainerAction(
            ContainerChange(data["action"]),
            data["container_id"],
            data["name"],
            data["spec_hash"],
            data["reason"],
            tuple(data.get("removed") or ()),
        )
        return cls(
            data["host"],
            data["serving_dir"],
            data["version"],
            data["image"],
            data["url"],
            container,
            data.get("downtime_s"),
            data.get("available_after_s"),
        )


def parse_memory(limit: str | None) -> int:
    """A Docker memory limit ("512m", "2g", bytes) in bytes; 0 for none."""
    if not limit:
        return 0
    text = str(limit).strip().lower().removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise ConfigError(f"memory limit {limit!r} is not a Docker size (512m, 2g, bytes)") from None
