"""Every path a run reads or writes, relative to the storage root, built from D and digests.

Nothing here reads the clock: a cleared task rerun writes to the same place.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re

from tfship.errors import ConfigError, PathEscapeError

SUCCESS_MARKER = "_SUCCESS"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def check_name(kind: str, value: str) -> str:
    """A dataset or model name: lowercase letters, digits, '_' and '-' only."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(f"{kind} name {value!r} must match {_NAME.pattern}")
    return value


def normalize_relative(path: str) -> str:
    """Normalise a root-relative path; refuse absolute paths and any '..' that leaves the root."""
    if path.startswith("/"):
        raise PathEscapeError(f"path {path!r} must be relative to the storage root")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathEscapeError(f"path {path!r} escapes the storage root")
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def partition(day: dt.date) -> str:
    """The Hive-style partition directory name for day D."""
    return f"dt={day.isoformat()}"


def raw_dir(dataset: str, day: dt.date) -> str:
    """Where the day's raw rows land."""
    return posixpath.join("raw", check_name("dataset", dataset), partition(day))


def raw_success(dataset: str, day: dt.date) -> str:
    """The marker that says the day's raw partition is complete."""
    return posixpath.join(raw_dir(dataset, day), SUCCESS_MARKER)


def features_dir(dataset: str, day: dt.date) -> str:
    """Where the day's validated TFRecords go."""
    return posixpath.join("features", check_name("dataset", dataset), partition(day))


def quarantine_dir(dataset: str, day: dt.date) -> str:
    """Where the day's rejected rows go, each with its reason."""
    return posixpath.join("quarantine", check_name("dataset", dataset), partition(day))


def candidate_dir(model: str, day: dt.date, digest: str) -> str:
    """A trained model waiting for publication, named by D and its manifest digest."""
    if not re.fullmatch(r"[0-9a-f]{8,}", digest):
        raise ConfigError(f"digest {digest!r} is not a lowercase hex md5")
    return posixpath.join("models", check_name("model", model), "candidates", f"{day.isoformat()}-{digest[:8]}")


def work_dir(dag_id: str, run_id: str) -> str:
    """Scratch space of one DAG run (checkpoints, plots); run ids are made path-safe."""
    safe_run = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    return posixpath.join("work", check_name("dag", dag_id), safe_run)
