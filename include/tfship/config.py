"""The one typed home of configuration: environment first, then embedded defaults."""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tfship.errors import ConfigError
from tfship.paths import check_name

# Airflow connection ids. Secrets live only in connections, never in this module.
SPARK_CONN_ID = "spark_default"
ALERT_WEBHOOK_CONN_ID = "tfship_alert_webhook"

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STORAGE_ROOT = (PROJECT_ROOT / "var" / "storage").as_uri()
DEFAULT_LOCAL_WORK_DIR = str(PROJECT_ROOT / "var" / "work")
DEFAULT_SERVING_ROOT = PROJECT_ROOT / "var" / "serving"


def _split_targets(value: str) -> tuple[tuple[str, str], ...]:
    """'host=/abs/dir;host2=/abs/dir2' -> ((host, dir), ...)."""
    targets = []
    for item in (part.strip() for part in value.split(";") if part.strip()):
        host, _, directory = item.partition("=")
        if not host or not directory.startswith("/"):
            raise ConfigError(f"serving target {item!r} must look like host=/absolute/dir")
        targets.append((host.strip(), directory.strip()))
    return tuple(targets)


def _split_endpoints(value: str) -> tuple[str, ...]:
    endpoints = tuple(part.strip().rstrip("/") for part in value.split(";") if part.strip())
    for endpoint in endpoints:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"WebHDFS endpoint {endpoint!r} must start with http:// or https://")
    return endpoints


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
    serving_targets: tuple[tuple[str, str], ...] = ()
    # When the schedule begins and whether the scheduler fills the days since then (catchup).
    schedule_start: dt.date = dt.date(2026, 1, 1)
    catchup: bool = False

    @property
    def serving_dirs(self) -> dict[str, str]:
        """Serving host -> the model's base directory on it (default: one local host)."""
        return dict(self.serving_targets) or {"local": str(DEFAULT_SERVING_ROOT / self.model)}

    def __post_init__(self) -> None:
        check_name("dataset", self.dataset)
        check_name("model", self.model)
        if self.storage_root.startswith("hdfs://") and not self.webhdfs_endpoints:
            raise ConfigError(f"storage root {self.storage_root!r} is on HDFS but TFSHIP_WEBHDFS_ENDPOINTS is empty")
        if self.raw_wait_timeout_s <= 0 or self.raw_poke_interval_s <= 0:
            raise ConfigError("raw wait timeout and poke interval must be positive seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read TFSHIP_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        if env.get("TFSHIP_STORAGE_ROOT"):
            kwargs["storage_root"] = env["TFSHIP_STORAGE_ROOT"]
        if env.get("TFSHIP_WEBHDFS_ENDPOINTS"):
            kwargs["webhdfs_endpoints"] = _split_endpoints(env["TFSHIP_WEBHDFS_ENDPOINTS"])
        if env.get("TFSHIP_SERVING_TARGETS"):
            kwargs["serving_targets"] = _split_targets(env["TFSHIP_SERVING_TARGETS"])
        if env.get("TFSHIP_LOCAL_WORK_DIR"):
            kwargs["local_work_dir"] = env["TFSHIP_LOCAL_WORK_DIR"]
        if env.get("TFSHIP_HDFS_USER"):
            kwargs["hdfs_user"] = env["TFSHIP_HDFS_USER"]
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
