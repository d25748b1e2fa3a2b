"""The one typed home of configuration: environment first, then embedded defaults.

`Settings.from_env()` is read once per process by whoever owns the process (a DAG file, a job's
`main`, the release view app) and handed on; nothing else reads TFSHIP_* variables.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfship.errors import ConfigError
from tfship.paths import check_name

if TYPE_CHECKING:
    from tfship.storage import Storage

# Airflow connection ids. Secrets live only in connections, never in this module.
SPARK_CONN_ID = "spark_default"
ALERT_WEBHOOK_CONN_ID = "tfship_alert_webhook"

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STORAGE_ROOT = (PROJECT_ROOT / "var" / "storage").as_uri()
DEFAULT_LOCAL_WORK_DIR = str(PROJECT_ROOT / "var" / "work")
DEFAULT_SERVING_ROOT = PROJECT_ROOT / "var" / "serving"
DEFAULT_REST_PORT = 8501

SERVING_DIR_ENV = "TFSHIP_SERVING_DIR"
SERVING_ADDRESSES_ENV = "TFSHIP_SERVING_ADDRESSES"
BALANCER_DIR_ENV = "TFSHIP_BALANCER_DIR"
BALANCER_RELOAD_ENV = "TFSHIP_BALANCER_RELOAD"
DEFAULT_GRPC_PORT = 8500
# The old name of SERVING_DIR_ENV, still read for one release (with a warning naming the new one).
DEPRECATED_SERVING_DIR_ENV = "TFSHIP_SERVING_TARGETS"
PARAM_DEFAULTS_ENV = "TFSHIP_PARAM_DEFAULTS"
REST_PORT_ENV = "TFSHIP_SERVING_REST_PORT"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageConfig:
    """Where the storage root is and how to reach it: `file:///dir`, or `hdfs://nn/dir` over WebHDFS/HttpFS."""

    root_uri: str
    webhdfs_endpoints: tuple[str, ...] = ()
    hdfs_user: str = field(default_factory=getpass.getuser)

    def __post_init__(self) -> None:
        object.__setattr__(self, "webhdfs_endpoints", tuple(self.webhdfs_endpoints))
        if self.root_uri.startswith("hdfs://") and not self.webhdfs_endpoints:
            raise ConfigError(f"storage root {self.root_uri!r} is on HDFS but TFSHIP_WEBHDFS_ENDPOINTS is empty")

    def open(self) -> Storage:
        """The storage backend for this root."""
        from tfship.storage import open_storage

        return open_storage(self.root_uri, self.webhdfs_endpoints, self.hdfs_user)


@dataclass(frozen=True)
class ServingHost:
    """One serving host: its serving dir (the model's TF Serving base path there) and where TF Serving answers.

    `address` defaults to the host's name (`local` is loopback); ports to the REST port setting and 8500.
    """

    name: str
    serving_dir: str
    address: str = ""
    rest_port: int = DEFAULT_REST_PORT
    grpc_port: int = DEFAULT_GRPC_PORT

    def __post_init__(self) -> None:
        if not self.name or not self.serving_dir.startswith("/"):
            raise ConfigError(f"serving host {self.name!r}={self.serving_dir!r} must look like host=/absolute/dir")
        if not self.address:
            object.__setattr__(self, "address", "127.0.0.1" if self.name in ("local", "localhost") else self.name)

    @property
    def rest_url(self) -> str:
        """`http://address:rest_port`."""
        return f"http://{self.address}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        """`address:grpc_port`."""
        return f"{self.address}:{self.grpc_port}"

    def to_kwargs(self) -> dict[str, str]:
        """`{"host": ..., "serving_dir": ...}`: one mapped task copy's arguments."""
        return {"host": self.name, "serving_dir": self.serving_dir}


def _with_addresses(hosts: tuple[ServingHost, ...], value: str, rest_port: int) -> tuple[ServingHost, ...]:
    """Apply 'host=address[:rest_port[:grpc_port]];...' (TFSHIP_SERVING_ADDRESSES) to the hosts."""
    known = {host.name: host for host in hosts}
    for item in (part.strip() for part in value.split(";") if part.strip()):
        name, _, where = item.partition("=")
        parts = where.strip().split(":")
        if name.strip() not in known or not parts[0] or len(parts) > 3:
            raise ConfigError(
                f"{SERVING_ADDRESSES_ENV} entry {item!r} must look like host=address[:rest[:grpc]] "
                f"for a host of {SERVING_DIR_ENV} ({sorted(known)})"
            )
        ports = [_port(SERVING_ADDRESSES_ENV, p) for p in parts[1:]]
        host = known[name.strip()]
        known[host.name] = ServingHost(host.name, host.serving_dir, parts[0], *(ports or [rest_port]))
    return tuple(known[host.name] for host in hosts)


def parse_serving_hosts(value: str) -> tuple[ServingHost, ...]:
    """'host=/abs/dir;host2=/abs/dir2' -> ServingHosts, in that order."""
    hosts = []
    for item in (part.strip() for part in value.split(";") if part.strip()):
        name, _, directory = item.partition("=")
        if not name or not directory.strip().startswith("/"):
            raise ConfigError(f"serving target {item!r} must look like host=/absolute/dir")
        hosts.append(ServingHost(name.strip(), directory.strip()))
    names = [host.name for host in hosts]
    if len(set(names)) != len(names):
        raise ConfigError(f"serving hosts {names} name a host twice")
    return tuple(hosts)


def _split_endpoints(value: str) -> tuple[str, ...]:
    endpoints = tuple(part.strip().rstrip("/") for part in value.split(";") if part.strip())
    for endpoint in endpoints:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"WebHDFS endpoint {endpoint!r} must start with http:// or https://")
    return endpoints


def _serving_dir_value(env: Mapping[str, str]) -> str:
    """TFSHIP_SERVING_DIR, else (for one release) the deprecated TFSHIP_SERVING_TARGETS, with a warning."""
    old = env.get(DEPRECATED_SERVING_DIR_ENV, "")
    if old:
        ignored = f"; it is ignored because {SERVING_DIR_ENV} is set" if env.get(SERVING_DIR_ENV) else ""
        message = (
            f"{DEPRECATED_SERVING_DIR_ENV} is deprecated: set {SERVING_DIR_ENV} (same host=/dir;... form){ignored}"
        )
        log.warning(message)
        warnings.warn(message, FutureWarning, stacklevel=3)
    return env.get(SERVING_DIR_ENV) or old


def _param_defaults(value: str) -> dict[str, Any]:
    try:
        overrides = json.loads(value)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{PARAM_DEFAULTS_ENV} is not JSON: {err}") from None
    if not isinstance(overrides, dict):
        raise ConfigError(f"{PARAM_DEFAULTS_ENV} must be a JSON object of Param name -> default")
    return overrides


def _port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name}={value!r} is not a TCP port")
    return port


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know about its environment."""

    storage_root: str = DEFAULT_STORAGE_ROOT
    webhdfs_endpoints: tuple[str, ...] = field(default_factory=tuple)
    hdfs_user: str = field(default_factory=getpass.getuser)
    dataset: str = "mnist"
    model: str = "mnist"
    raw_wait_timeout_s: int = 6 * 3600
    raw_poke_interval_s: int = 60
    local_work_dir: str = DEFAULT_LOCAL_WORK_DIR
    # Empty means one local host serving from DEFAULT_SERVING_ROOT/<model> (see `serving_hosts`).
    configured_hosts: tuple[ServingHost, ...] = ()
    serving_rest_port: int = DEFAULT_REST_PORT
    # The load balancer in front of the serving hosts (nginx): the directory of its generated upstreams
    # and how to make it reload ("pid:/run/nginx.pid" or "docker:<container>"); empty: no balancer.
    balancer_dir: str = ""
    balancer_reload: str = ""
    # Hosts released at once in a rolling release (the rest keep serving the stable version meanwhile).
    rollout_batch: int = 1
    # Where the TF Serving containers this worker starts go. Set when the worker itself runs in a
    # container (the compose stack): they join its network namespace and no path of its filesystem
    # is handed to the engine; the serving dir is the Docker volume `serving_volume`, and a scratch
    # copy (infra validation) is copied into the container. Empty: host network, paths bound.
    worker_container: str = ""
    serving_volume: str = ""
    # The TF Serving image; empty: the real pinned image if present, else the stand-in.
    serving_image: str = ""
    # Param name -> default for this environment (scheduled runs carry no conf); checked by the DAG's Params.
    param_defaults: Mapping[str, Any] = field(default_factory=dict)
    # When the schedule begins and whether the scheduler fills the days since then (catchup).
    schedule_start: dt.date = dt.date(2026, 1, 1)
    catchup: bool = False

    def __post_init__(self) -> None:
        check_name("dataset", self.dataset)
        check_name("model", self.model)
        if self.raw_wait_timeout_s <= 0 or self.raw_poke_interval_s <= 0:
            raise ConfigError("raw wait timeout and poke interval must be positive seconds")
        if self.rollout_batch < 1:
            raise ConfigError(f"TFSHIP_ROLLOUT_BATCH={self.rollout_batch}: at least one host at a time")
        if self.serving_volume and not self.worker_container:
            raise ConfigError("TFSHIP_SERVING_VOLUME needs TFSHIP_WORKER_CONTAINER (the worker's container)")
        if bool(self.balancer_dir) != bool(self.balancer_reload):
            raise ConfigError("TFSHIP_BALANCER_DIR and TFSHIP_BALANCER_RELOAD go together: set both or neither")
        self.storage  # noqa: B018 - refuses an HDFS root without endpoints now, not at first use

    @property
    def serving_network_mode(self) -> str:
        """The network of TF Serving containers this worker starts: its own container's, else the host's."""
        from tfship.serving.container import worker_network_mode

        return worker_network_mode(self.worker_container)

    @property
    def storage(self) -> StorageConfig:
        """The storage root and how to reach it."""
        return StorageConfig(self.storage_root, self.webhdfs_endpoints, self.hdfs_user)

    @property
    def serving_hosts(self) -> tuple[ServingHost, ...]:
        """Every serving host, in the configured order (default: one local host)."""
        default = ServingHost("local", str(DEFAULT_SERVING_ROOT / self.model), rest_port=self.serving_rest_port)
        return self.configured_hosts or (default,)

    def serving_host(self, name: str) -> ServingHost:
        """The serving host called `name`, or an error listing the known ones."""
        for host in self.serving_hosts:
            if host.name == name:
                return host
        raise ConfigError(f"host {name!r} is not a serving host (known: {sorted(h.name for h in self.serving_hosts)})")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read TFSHIP_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        if env.get("TFSHIP_STORAGE_ROOT"):
            kwargs["storage_root"] = env["TFSHIP_STORAGE_ROOT"]
        if env.get("TFSHIP_WEBHDFS_ENDPOINTS"):
            kwargs["webhdfs_endpoints"] = _split_endpoints(env["TFSHIP_WEBHDFS_ENDPOINTS"])
        serving = _serving_dir_value(env)
        hosts = parse_serving_hosts(serving) if serving else ()
        rest_port = _port(REST_PORT_ENV, env[REST_PORT_ENV]) if env.get(REST_PORT_ENV) else DEFAULT_REST_PORT
        kwargs["serving_rest_port"] = rest_port
        if hosts:
            hosts = tuple(ServingHost(h.name, h.serving_dir, rest_port=rest_port) for h in hosts)
            kwargs["configured_hosts"] = _with_addresses(hosts, env.get(SERVING_ADDRESSES_ENV, ""), rest_port)
        for key, name in (("balancer_dir", BALANCER_DIR_ENV), ("balancer_reload", BALANCER_RELOAD_ENV)):
            if env.get(name):
                kwargs[key] = env[name]
        if env.get("TFSHIP_ROLLOUT_BATCH"):
            try:
                kwargs["rollout_batch"] = int(env["TFSHIP_ROLLOUT_BATCH"])
            except ValueError:
                raise ConfigError(
                    f"TFSHIP_ROLLOUT_BATCH={env['TFSHIP_ROLLOUT_BATCH']!r} is not a whole number"
                ) from None
        if env.get(PARAM_DEFAULTS_ENV, "").strip():
            kwargs["param_defaults"] = _param_defaults(env[PARAM_DEFAULTS_ENV])
        if env.get("TFSHIP_LOCAL_WORK_DIR"):
            kwargs["local_work_dir"] = env["TFSHIP_LOCAL_WORK_DIR"]
        if env.get("TFSHIP_HDFS_USER"):
            kwargs["hdfs_user"] = env["TFSHIP_HDFS_USER"]
        for key, name in (
            ("worker_container", "TFSHIP_WORKER_CONTAINER"),
            ("serving_volume", "TFSHIP_SERVING_VOLUME"),
            ("serving_image", "TFSHIP_SERVING_IMAGE"),
        ):
            if env.get(name):
                kwargs[key] = env[name].strip()
        for key, name in (("dataset", "TFSHIP_DATASET"), ("model", "TFSHIP_MODEL")):
            if env.get(name):
                kwargs[key] = env[name]
        for key, name in (
            ("raw_wait_timeout_s", "TFSHIP_RAW_WAIT_TIMEOUT_S"),
            ("raw_poke_interval_s", "TFSHIP_RAW_POKE_INTERVAL_S"),
        ):
            if env.get(name):
                try:
                    kwargs[key] = int(env[name])
                except ValueError:
                    raise ConfigError(f"{name}={env[name]!r} is not a whole number of seconds") from None
        if env.get("TFSHIP_SCHEDULE_START"):
            try:
                kwargs["schedule_start"] = dt.date.fromisoformat(env["TFSHIP_SCHEDULE_START"])
            except ValueError:
                raise ConfigError(f"TFSHIP_SCHEDULE_START={env['TFSHIP_SCHEDULE_START']!r} is not YYYY-MM-DD") from None
        if env.get("TFSHIP_CATCHUP"):
            flag = env["TFSHIP_CATCHUP"].strip().lower()
            if flag not in ("true", "false", "1", "0"):
                raise ConfigError(f"TFSHIP_CATCHUP={env['TFSHIP_CATCHUP']!r} must be true or false")
            kwargs["catchup"] = flag in ("true", "1")
        return cls(**kwargs)  # type: ignore[arg-type]
