"""The TF Serving container spec and its hash, the container reconciliation, and a small REST client.

Pure library: the Docker client is passed in (the low-level `docker.APIClient`, which is what
the docker provider's `DockerHook.get_conn()` returns), HTTP goes through `requests`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfship.errors import ConfigError, TfshipError
from tfship.paths import check_name

# The pinned real image; where it is not present locally the stand-in is used (see choose_image).
REAL_IMAGE = "tensorflow/serving:2.20.0"  # the contract (TFSERVING_CONTRACT.md) was read from 2.20
STANDIN_REPOSITORY = "tfship/tfserving-standin"
CONTAINER_PREFIX = "tfserving-"
SPEC_HASH_LABEL = "tfship.spec-hash"
MODEL_LABEL = "tfship.model"
MANAGED_LABEL = "tfship.managed"
MANAGED_VALUE = "tfserving"
CONFIG_MOUNT = "/etc/tfship/models.config"
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")

# Flags of tensorflow_model_server (2.x main.cc); it only warns about others, so a typo would
# silently change nothing: extra flags are checked against this list.
TF_SERVING_FLAGS = frozenset(
    {
        "port", "grpc_socket_path", "rest_api_port", "rest_api_num_threads", "rest_api_timeout_in_ms",
        "rest_api_enable_cors_support", "enable_batching", "allow_version_labels_for_unavailable_models",
        "batching_parameters_file", "enable_per_model_batching_parameters", "model_config_file",
        "model_config_file_poll_wait_seconds", "model_name", "model_base_path", "max_num_load_retries",
        "load_retry_interval_micros", "file_system_poll_wait_seconds", "flush_filesystem_caches",
        "tensorflow_session_parallelism", "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
        "use_alts_credentials", "ssl_config_file", "platform_config_file", "per_process_gpu_memory_fraction",
        "saved_model_tags", "grpc_channel_arguments", "grpc_max_threads", "enable_model_warmup",
        "num_request_iterations_for_warmup", "version", "monitoring_config_file",
        "remove_unused_fields_from_bundle_metagraph", "prefer_tflite_model", "num_tflite_pools",
        "num_tflite_interpreters_per_pool", "enable_signature_method_name_check",
        "xla_cpu_compilation_enabled", "enable_profiler", "thread_pool_factory_config_file", "mixed_precision",
        "skip_initialize_tpu", "num_load_threads", "num_unload_threads", "tensorflow_session_config_file",
        "model_base_path_prefix", "enable_grpc_healthcheck_service",
    }
)  # fmt: skip
# Set through the spec's own fields, so a second copy in extra_flags would silently win or lose.
SPEC_OWNED_FLAGS = frozenset(
    {"port", "rest_api_port", "model_name", "model_base_path", "model_config_file", "file_system_poll_wait_seconds"}
)

log = logging.getLogger(__name__)


class ServingError(TfshipError):
    """Serving did not do what was asked; the message names the model, version and URL."""


class ServingUnreachable(ServingError):
    """Nothing answers at the serving endpoint: an infrastructure fault, not evidence against the model."""


class VersionLoadFailed(ServingError):
    """The server gave up loading a version: state END with an error."""

    def __init__(self, model: str, version: int, error_code: str, error_message: str) -> None:
        self.model, self.version, self.error_code, self.error_message = model, version, error_code, error_message
        super().__init__(f"model {model!r} version {version} failed to load ({error_code}): {error_message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return VersionLoadFailed, (self.model, self.version, self.error_code, self.error_message)


def validate_flags(flags: Sequence[str]) -> tuple[str, ...]:
    """Refuse flags TF Serving does not know (it would ignore them) or that the spec already sets."""
    checked = []
    for flag in flags:
        name = flag.removeprefix("--").partition("=")[0] if flag.startswith("--") else ""
        if not name:
            raise ConfigError(f"TF Serving flag {flag!r} must look like --name=value")
        if name not in TF_SERVING_FLAGS:
            raise ConfigError(f"TF Serving flag {flag!r} is unknown: the server would only warn and ignore it")
        if name in SPEC_OWNED_FLAGS:
            raise ConfigError(f"TF Serving flag {flag!r} is set by the serving spec; use its field instead")
        checked.append(flag)
    return tuple(checked)


@dataclass(frozen=True)
class ServingSpec:
    """Everything that defines the serving container; its hash decides whether to recreate it."""

    model: str
    serving_dir: str
    image: str = REAL_IMAGE
    grpc_port: int = 8500
    rest_port: int = 8501
    poll_wait_s: int = 1
    model_config_file: str | None = None
    extra_flags: tuple[str, ...] = ()
    restart_policy: str = "unless-stopped"
    memory_limit: str | None = "2g"
    network_mode: str = "host"
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
        """`tfserving-<model>`: one container per host and model."""
        return f"{CONTAINER_PREFIX}{self.model}"

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
        return [*flags, *self.extra_flags]

    def environment(self) -> dict[str, str]:
        """The entrypoint builds --model_name and --model_base_path from these."""
        return {"MODEL_NAME": self.model, "MODEL_BASE_PATH": "/models"}

    def binds(self) -> dict[str, dict[str, str]]:
        """Read-only mounts: the serving directory, and the model config file when given."""
        binds = {self.serving_dir: {"bind": self.mount_path, "mode": "ro"}}
        if self.model_config_file:
            binds[self.model_config_file] = {"bind": CONFIG_MOUNT, "mode": "ro"}
        return binds

    def spec_hash(self) -> str:
        """sha256 over image, flags, environment, mounts, ports and limits (and the config file's content)."""
        fields = asdict(self)
        fields.update(command=self.command(), environment=self.environment(), binds=self.binds())
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()

    def labels(self) -> dict[str, str]:
        """Labels that find the container again (model, managed) and tell its spec (hash)."""
        return {SPEC_HASH_LABEL: self.spec_hash(), MODEL_LABEL: self.model, MANAGED_LABEL: MANAGED_VALUE}

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
        if self.network_mode != "host":
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


def render_model_config(model: str, *, policy: str = "latest", versions: Sequence[int] = (), num_versions: int = 1,
                        labels: dict[str, int] | None = None) -> str:  # fmt: skip
    """ModelServerConfig text for one model mounted at /models/<model> (policy latest/all/specific)."""
    check_name("model", model)
    if policy == "latest":
        policy_text = f"latest {{ num_versions: {int(num_versions)} }}"
    elif policy == "all":
        policy_text = "all {}"
    elif policy == "specific":
        if not versions:
            raise ConfigError("the specific version policy needs at least one version")
        policy_text = "specific { " + " ".join(f"versions: {int(v)}" for v in versions) + " }"
    else:
        raise ConfigError(f"version policy {policy!r} is not latest, all or specific")
    label_text = "".join(
        f"\n    version_labels {{ key: '{key}' value: {int(value)} }}" for key, value in (labels or {}).items()
    )
    return (
        "model_config_list {\n  config {\n"
        f"    name: '{model}'\n    base_path: '/models/{model}'\n    model_platform: 'tensorflow'\n"
        f"    model_version_policy {{ {policy_text} }}{label_text}\n  }}\n}}\n"
    )


# ---------------------------------------------------------------- the container


@dataclass(frozen=True)
class ContainerAction:
    """What reconciliation did: kept, created or recreated, and why."""

    action: str
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
        data["removed"] = list(self.removed)
        return data


def find_containers(api: Any, spec: ServingSpec) -> list[dict[str, Any]]:
    """Every container with our name or our model's labels, running or not (leftovers included)."""
    by_name = api.containers(all=True, filters={"name": f"^/{spec.container_name}$"})
    by_label = api.containers(
        all=True, filters={"label": [f"{MODEL_LABEL}={spec.model}", f"{MANAGED_LABEL}={MANAGED_VALUE}"]}
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
    if current is not None and current.get("State") == "running" and current["Labels"].get(SPEC_HASH_LABEL) == wanted:
        removed = tuple(_remove(api, c, stop_timeout_s) for c in others)
        return ContainerAction("kept", current["Id"], spec.container_name, wanted, "same spec, running", removed)
    if current is None:
        reason = "no container yet" if not others else "only leftovers of an interrupted deploy"
    elif current.get("State") != "running":
        reason = f"container was {current.get('State')} ({current.get('Status', '')})"
    else:
        reason = f"spec changed ({current['Labels'].get(SPEC_HASH_LABEL, 'no hash')[:12]} -> {wanted[:12]})"
    was_serving = current is not None and current.get("State") == "running"
    removed = tuple(_remove(api, c, stop_timeout_s) for c in ([current] if current else []) + others)
    stopped_at = time.monotonic() if was_serving else None
    created = api.create_container(**spec.create_kwargs(api))
    api.start(created["Id"])
    action = "recreated" if current is not None else "created"
    log.info("%s container %s (%s): %s", action, spec.container_name, created["Id"][:12], reason)
    return ContainerAction(action, created["Id"], spec.container_name, wanted, reason, removed, stopped_at)


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


# ---------------------------------------------------------------- REST


class ServingClient:
    """REST calls to one model on one TF Serving (`http://host:8501`)."""

    def __init__(self, base_url: str, model: str, *, timeout_s: float = 30.0, session: Any = None) -> None:
        import requests

        check_name("model", model)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.session = session or requests.Session()

    def model_url(self, version: int | None = None) -> str:
        """`/v1/models/<m>` or `/v1/models/<m>/versions/<v>`."""
        url = f"{self.base_url}/v1/models/{self.model}"
        return url if version is None else f"{url}/versions/{int(version)}"

    def version_status(self, version: int | None = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of the status call; raises requests' errors when nothing answers."""
        response = self.session.get(self.model_url(version), timeout=self.timeout_s)
        return response.status_code, _json_body(response)

    def unreachable(self, timeout_s: float = 5.0) -> str | None:
        """Why the server does not answer its status call (refused, timed out), or None when it answers."""
        import requests

        try:
            self.session.get(self.model_url(), timeout=timeout_s)
        except requests.RequestException as err:
            return f"{self.model_url()} does not answer: {type(err).__name__}: {err}"
        return None

    def predict(
        self, instances: Any, *, version: int | None = None, signature_name: str = "serving_default"
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of a row-format predict, pinned to `version` when given."""
        response = self.session.post(
            f"{self.model_url(version)}:predict",
            data=json.dumps({"signature_name": signature_name, "instances": instances}),
            headers={"Content-Type": "application/json"},
            timeout=self.timeout_s,
        )
        return response.status_code, _json_body(response)

    def wait_until_available(
        self,
        version: int,
        *,
        timeout_s: float,
        poll_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        check_alive: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Poll `/versions/<v>` until AVAILABLE; END with an error raises VersionLoadFailed with its text."""
        import requests

        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            try:
                code, body = self.version_status(version)
            except requests.RequestException as err:  # the container may still be starting
                code, body, last = 0, {}, f"no answer from {self.base_url}: {type(err).__name__}"
                if check_alive is not None:
                    check_alive()
            if code == 200:
                entry = next(
                    (e for e in body.get("model_version_status", []) if str(e.get("version")) == str(version)), None
                )
                if entry is not None:
                    state = entry.get("state")
                    status = entry.get("status") or {}
                    if state == "AVAILABLE":
                        return entry
                    error_code = status.get("error_code", "OK")
                    if state == "END" and (error_code != "OK" or status.get("error_message")):
                        raise VersionLoadFailed(self.model, version, error_code, status.get("error_message", ""))
                    # END without an error: unloaded; after a rollback it is aspired and loaded again.
                    last = f"state {state}" + (
                        " (unloaded: a newer version or the policy wins?)" if state == "END" else ""
                    )
            elif code:
                last = f"HTTP {code}: {body.get('error', body)}"
            if time.monotonic() >= deadline:
                raise ServingError(
                    f"model {self.model!r} version {version} not AVAILABLE at {self.model_url(version)} "
                    f"after {timeout_s:.0f}s; last seen: {last}"
                )
            sleep(poll_s)

    def wait_until_answering(
        self, *, timeout_s: float, poll_s: float = 0.2, check_alive: Callable[[], None] | None = None
    ) -> float:
        """Block until the model's status call answers 200 (the REST port opens after the first load)."""
        import requests

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.version_status()[0] == 200:
                    return time.monotonic()
            except requests.RequestException:
                if check_alive is not None:
                    check_alive()
            if time.monotonic() >= deadline:
                raise ServingError(f"{self.model_url()} did not answer within {timeout_s:.0f}s")
            time.sleep(poll_s)


def _json_body(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"error": response.text[:500]}
    return body if isinstance(body, dict) else {"error": f"unexpected JSON {str(body)[:200]}"}
