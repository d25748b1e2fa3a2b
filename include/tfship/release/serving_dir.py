"""TF Serving's on-disk layout for one model on one serving host: the one owner of it.

A serving dir is the model's TF Serving base path on a host::

    <serving_dir>/
        2026112500/              version: ModelVersion.of(D=2026-11-25, n=0), complete and verified
        2026112601/              the newest number is what the `latest` policy serves
        .staging-<digest>/       a publication in progress (TF Serving ignores non-numeric names)
        .pruning-<version>/      an old version being deleted (hidden by a rename first)
        .rejected/<version>[-k]/ versions taken out of service; their numbers are never reused
        .publish.lock            flock held by the one publication writing here
        releases.jsonl           the release log: publications, canary verdicts, rollbacks
        serving.json             which versions the server keeps loaded and its labels (stable, canary)
        models.config            the same as TF Serving's model config file (a file: never a version)

Version numbers are `YYYYMMDD * 100 + n` for day D (n = 0, 1, ... for retrains of that day), so
numbers grow with data time and a backfill's older model always gets a lower number.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfship.constants import LogEvent
from tfship.days import day_number
from tfship.errors import ConfigError, TfshipError
from tfship.release.manifest import MANIFEST_FILE
from tfship.storage import fsync_dir

RELEASE_LOG = "releases.jsonl"
STAGING_PREFIX = ".staging-"
PRUNING_PREFIX = ".pruning-"
REJECTED_DIR = ".rejected"
LOCK_FILE = ".publish.lock"
SERVING_STATE = "serving.json"
MODEL_CONFIG = "models.config"
MAX_RETRAINS_PER_DAY = 100
_NUMERIC = re.compile(r"[0-9]+")  # TF Serving's rule: a base-10 integer name is a version
_LEADING_NUMBER = re.compile(r"^([0-9]+)")

log = logging.getLogger(__name__)


class ModelVersion(int):
    """A TF Serving version number `YYYYMMDD * 100 + n`; an int, so it sorts, compares and serialises as one."""

    @classmethod
    def of(cls, day: dt.date, n: int = 0) -> ModelVersion:
        """The number of the n-th model of day D."""
        if not 0 <= n < MAX_RETRAINS_PER_DAY:
            raise ConfigError(f"retrain {n} of day {day.isoformat()} is outside 0..{MAX_RETRAINS_PER_DAY - 1}")
        return cls(day_number(day) * 100 + n)

    @classmethod
    def parse(cls, value: object) -> ModelVersion | None:
        """A version from an int or a directory name / string of digits; None for anything else."""
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return cls(value) if value >= 0 else None
        text = str(value).strip()
        return cls(int(text)) if _NUMERIC.fullmatch(text) else None

    @property
    def day(self) -> dt.date | None:
        """D, or None when the number does not encode a date (a version someone numbered by hand)."""
        number = int(self)
        try:
            return dt.date(number // 1000000, number // 10000 % 100, number // 100 % 100)
        except ValueError:
            return None

    @property
    def n(self) -> int:
        """Which retrain of day D this is (0 for the first)."""
        return int(self) % 100


@dataclass(frozen=True)
class Publication:
    """One publication line of the release log: which digest became which version, from where."""

    version: int
    digest: str
    model: str
    day: str
    run_id: str
    host: str
    endpoint: str
    bytes: int
    seconds: float
    published_at: str


class ReleaseLog:
    """`<serving_dir>/releases.jsonl`: one JSON object a line, appended and fsynced, never rewritten.

    The one torn-line rule: a writer killed mid-append leaves a last line without its newline; the
    next append starts on a fresh line and readers skip what does not parse.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one line and fsync it (and the directory when the log is new)."""
        existed = self.path.exists()
        with open(self.path, "ab") as handle:
            if handle.tell() > 0:
                with open(self.path, "rb") as reader:
                    reader.seek(-1, os.SEEK_END)
                    if reader.read(1) != b"\n":
                        handle.write(b"\n")
            handle.write(json.dumps(dict(record), sort_keys=True, default=str).encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        if not existed:
            fsync_dir(self.path.parent)

    def record_publication(self, publication: Publication) -> None:
        """Append a publication line."""
        self.append(asdict(publication))

    def record_event(self, event: LogEvent, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append `{"event": ..., "recorded_at": ..., **record}`; returns the line."""
        # recorded_at is metadata for people: never part of an id, a version or a path.
        line = {"event": str(event), "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **record}
        self.append(line)
        return line

    def entries(self) -> list[dict[str, Any]]:
        """Every line that parses as a JSON object, in order (a torn line is skipped)."""
        if not self.path.exists():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as err:
                log.warning("%s line %d is not JSON, ignored: %s", self.path, number, err)
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def publications(self) -> list[Publication]:
        """Every publication line (event lines share the log and are left out)."""
        publications = []
        for entry in self.entries():
            if "event" in entry:
                continue
            try:
                publications.append(Publication(**entry))
            except TypeError as err:
                log.warning("%s holds a line that is not a publication, ignored: %s", self.path, err)
        return publications

    def published_version(self, digest: str) -> ModelVersion | None:
        """The version the log gives this digest, if any (the md5 gate)."""
        for publication in reversed(self.publications()):
            if publication.digest == digest:
                return ModelVersion(publication.version)
        return None

    def last_event(self, event: LogEvent, *, run_id: str, version: int | None = None) -> dict[str, Any] | None:
        """The last `event` line of a run (and version), without the event bookkeeping keys."""
        found = None
        for entry in self.entries():
            if entry.get("event") != event or entry.get("run_id") != run_id:
                continue
            if version is not None and ModelVersion.parse(entry.get("version")) != version:
                continue
            found = {key: value for key, value in entry.items() if key not in ("event", "recorded_at")}
        return found


@dataclass(frozen=True)
class ServedVersions:
    """What a host's server is told to keep loaded (a `specific` version policy) and its version labels."""

    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(sorted({int(v) for v in self.versions})))
        object.__setattr__(self, "labels", {str(k): int(v) for k, v in self.labels.items()})
        stray = {k: v for k, v in self.labels.items() if v not in self.versions}
        if stray:
            raise ConfigError(f"labels {stray} point at versions not kept loaded {list(self.versions)}")

    def label(self, name: str) -> ModelVersion | None:
        """The version a label points at, if any."""
        return ModelVersion(self.labels[name]) if name in self.labels else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"versions": list(self.versions), "labels": dict(self.labels)}


class LockBusy(TfshipError):
    """Another publication into the same serving dir is running."""


class ServingDirError(TfshipError):
    """The serving dir does not hold what an operation needs; the message names the path."""


class ServingDir:
    """One host's serving dir (see the module docstring for the tree)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ServingDir({str(self.path)!r})"

    @property
    def log(self) -> ReleaseLog:
        """The host's release log."""
        return ReleaseLog(self.path / RELEASE_LOG)

    def version_dir(self, version: int) -> Path:
        """`<serving_dir>/<version>`."""
        return self.path / str(int(version))

    def staging_dir(self, digest: str) -> Path:
        """Where a publication of `digest` is assembled before its rename."""
        return self.path / f"{STAGING_PREFIX}{digest}"

    def served(self) -> ServedVersions | None:
        """What the server was last told to keep loaded, or None before the first labelled release."""
        path = self.path / SERVING_STATE
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServedVersions(tuple(data.get("versions") or ()), data.get("labels") or {})

    def write_served(self, served: ServedVersions, model_config: str) -> None:
        """Write the state and TF Serving's model config file for it, each atomically and durably."""
        for name, text in ((SERVING_STATE, json.dumps(served.to_dict(), sort_keys=True)), (MODEL_CONFIG, model_config)):
            temp = self.path / f".{name}.tmp"
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path / name)
        fsync_dir(self.path)

    @property
    def rejected_dir(self) -> Path:
        """Where rejected versions are kept."""
        return self.path / REJECTED_DIR

    def versions(self) -> list[ModelVersion]:
        """The versions TF Serving would see (base-10 integer names of directories), ascending."""
        if not self.path.is_dir():
            return []
        return sorted(
            ModelVersion(int(child.name))
            for child in self.path.iterdir()
            if _NUMERIC.fullmatch(child.name) and child.is_dir()
        )

    def newest(self) -> ModelVersion | None:
        """The version the `latest` policy serves: the highest number on disk.

        Publication only renames complete, verified directories into numeric names, so the
        highest number on disk is the newest publication.
        """
        versions = self.versions()
        return versions[-1] if versions else None

    def superseded_by(self, version: int) -> ModelVersion | None:
        """The highest version above `version` here, if any (the `latest` policy serves it instead)."""
        newest = self.newest()
        return newest if newest is not None and newest > version else None

    def rejected_versions(self) -> list[ModelVersion]:
        """Versions moved into `.rejected/` (their names start with the number)."""
        if not self.rejected_dir.is_dir():
            return []
        return sorted(
            ModelVersion(int(match.group(1)))
            for child in self.rejected_dir.iterdir()
            if (match := _LEADING_NUMBER.match(child.name))
        )

    def allocate(self, day: dt.date, publications: Iterable[Publication]) -> ModelVersion:
        """The next number of day D not used by a directory, a rejection or the log."""
        base = ModelVersion.of(day)
        used = {v for v in self.versions() + self.rejected_versions() if base <= v < base + MAX_RETRAINS_PER_DAY}
        used |= {p.version for p in publications if base <= p.version < base + MAX_RETRAINS_PER_DAY}
        n = max(used) - base + 1 if used else 0
        if n >= MAX_RETRAINS_PER_DAY:
            raise ConfigError(
                f"day {day.isoformat()} already used all {MAX_RETRAINS_PER_DAY} version numbers in {self.path}"
            )
        return ModelVersion.of(day, n)

    def holding(self, digest: str) -> ModelVersion | None:
        """A version directory whose MANIFEST.json has this digest (a run killed after its rename)."""
        for version in reversed(self.versions()):
            try:
                manifest = json.loads((self.version_dir(version) / MANIFEST_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(manifest, dict) and manifest.get("digest") == digest:
                return version
        return None

    def prune(self, keep: int, protect: int | None = None) -> list[ModelVersion]:
        """Delete all but the newest `keep` versions (and `protect`); each is hidden by a rename first."""
        versions = self.versions()
        kept = set(versions[-keep:]) | ({protect} if protect is not None else set())
        pruned = []
        for version in versions:
            if version in kept:
                continue
            hidden = self.path / f"{PRUNING_PREFIX}{version}"
            # Renamed first so TF Serving never lists a half-deleted numeric directory.
            os.rename(self.version_dir(version), hidden)
            shutil.rmtree(hidden)
            pruned.append(version)
            log.info("pruned version %d from %s (keeping the newest %d)", version, self.path, keep)
        if pruned:
            fsync_dir(self.path)
        return pruned

    def remove_stale_work(self) -> list[str]:
        """Remove `.staging-*` and `.pruning-*` directories left behind by killed runs."""
        removed = []
        for child in sorted(self.path.iterdir()):
            if child.name.startswith((STAGING_PREFIX, PRUNING_PREFIX)) and child.is_dir():
                shutil.rmtree(child)
                removed.append(child.name)
                log.info("removed %s left behind by an interrupted run", child)
        if removed:
            fsync_dir(self.path)
        return removed

    def reject(self, version: int) -> Path:
        """Rename `<v>` to `.rejected/<v>` (`<v>-k` if rejected before): TF Serving stops aspiring it."""
        source = self.version_dir(version)
        if not source.is_dir():
            raise ServingDirError(f"version directory {source} does not exist: nothing to reject")
        self.rejected_dir.mkdir(exist_ok=True)
        destination, attempt = self.rejected_dir / str(int(version)), 0
        while destination.exists():
            attempt += 1
            destination = self.rejected_dir / f"{int(version)}-{attempt}"
        os.rename(source, destination)  # same filesystem: atomic, never a half-listed version
        fsync_dir(self.path)
        fsync_dir(self.rejected_dir)
        return destination

    @contextlib.contextmanager
    def lock(self, deadline: float) -> Iterator[None]:
        """Hold the publication lock until `deadline` (monotonic); the kernel drops it if the process dies."""
        with open(self.path / LOCK_FILE, "a+b") as handle:
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockBusy(f"another publication still holds {self.path / LOCK_FILE}") from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
