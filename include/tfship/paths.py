"""Every path a run reads or writes, relative to the storage root, built from D and digests.

Nothing here reads the clock: a cleared task rerun writes to the same place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
import re

from tfship.days import parse_day
from tfship.errors import ConfigError, PathEscapeError

SUCCESS_MARKER = "_SUCCESS"
RELEASES_DIR = "releases"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")  # what a run id may not carry into a path


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


DEFAULT_RAW_ROOT = "raw"
# The pipeline writes under these; a raw root inside one of them would read our own output as input.
_OUTPUT_ROOTS = ("features", "quarantine", "models", "work", RELEASES_DIR)


def check_raw_root(raw_root: str) -> str:
    """A root-relative directory holding `<dataset>/dt=D/`; refuses escapes and the pipeline's own outputs."""
    if not isinstance(raw_root, str) or not raw_root.strip():
        raise ConfigError(f"raw_root {raw_root!r} must be a non-empty path relative to the storage root")
    try:
        normal = normalize_relative(raw_root.strip())
    except PathEscapeError as err:
        raise PathEscapeError(f"raw_root: {err}") from None
    if not normal:
        raise PathEscapeError(f"raw_root {raw_root!r} is the storage root itself; name a directory under it")
    if normal.split("/")[0] in _OUTPUT_ROOTS:
        raise ConfigError(f"raw_root {raw_root!r} lies inside {normal.split('/')[0]}/, which the pipeline writes")
    return normal


def raw_dir(dataset: str, day: dt.date, raw_root: str = DEFAULT_RAW_ROOT) -> str:
    """Where the day's raw rows land (under `raw/` unless a replay names another root)."""
    return posixpath.join(check_raw_root(raw_root), check_name("dataset", dataset), partition(day))


def raw_success(dataset: str, day: dt.date, raw_root: str = DEFAULT_RAW_ROOT) -> str:
    """The marker that says the day's raw partition is complete."""
    return posixpath.join(raw_dir(dataset, day, raw_root), SUCCESS_MARKER)


def features_dir(dataset: str, day: dt.date) -> str:
    """Where the day's validated TFRecords go."""
    return posixpath.join("features", check_name("dataset", dataset), partition(day))


def quarantine_dir(dataset: str, day: dt.date) -> str:
    """Where the day's rejected rows go, each with its reason."""
    return posixpath.join("quarantine", check_name("dataset", dataset), partition(day))


def candidates_dir(model: str) -> str:
    """`models/<model>/candidates`: every trained model of one model name, one directory each."""
    return posixpath.join("models", check_name("model", model), "candidates")


def candidate_dir(model: str, day: dt.date, digest: str) -> str:
    """A trained model waiting for publication, named by D and its manifest digest."""
    if not re.fullmatch(r"[0-9a-f]{8,}", digest):
        raise ConfigError(f"digest {digest!r} is not a lowercase hex md5")
    return posixpath.join(candidates_dir(model), f"{day.isoformat()}-{digest[:8]}")


def infra_validation_path(candidate: str) -> str:
    """`models/<m>/infra_validation/<D>-<digest8>.json`: a candidate's infra validation, beside it, not in it.

    Not inside the candidate: its directory is content-addressed and immutable (the manifest's
    digest names it), and the result belongs to the candidate and the image it was tried with.
    """
    parts = normalize_relative(candidate).split("/")
    if len(parts) != 4 or parts[0] != "models" or parts[2] != "candidates":
        raise ConfigError(f"{candidate!r} is not a candidate directory (models/<model>/candidates/<D>-<digest8>)")
    return posixpath.join("models", check_name("model", parts[1]), "infra_validation", f"{parts[3]}.json")


def work_dir(dag_id: str, run_id: str) -> str:
    """Scratch space of one DAG run (checkpoints, plots); run ids are made path-safe."""
    return posixpath.join("work", check_name("dag", dag_id), _UNSAFE.sub("_", run_id))


def run_slug(run_id: str) -> str:
    """A file name for a run id: unsafe characters become '_', plus a hash so two ids never collide."""
    readable = _UNSAFE.sub("_", run_id).lstrip(".") or "run"
    return f"{readable[:120]}-{hashlib.md5(run_id.encode('utf-8')).hexdigest()[:8]}"


def model_releases_dir(model: str) -> str:
    """`releases/<model>`: every record of one model, one directory per day D."""
    return posixpath.join(RELEASES_DIR, check_name("model", model))


def release_record_path(model: str, day: str, run_id: str) -> str:
    """`releases/<model>/<D>/<run-slug>.json`: the same run always lands on the same file."""
    return posixpath.join(model_releases_dir(model), parse_day(day).isoformat(), f"{run_slug(run_id)}.json")
