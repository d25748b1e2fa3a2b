"""md5-gated publication of a candidate model into a TF Serving base path on one serving host.

The candidate's MANIFEST.json is read first (one small read) and its digest looked up in the
target's release log: a model already published is never transferred again. Otherwise every
file is streamed from a randomly ordered list of WebHDFS/HttpFS endpoints (failing over on
connection errors and timeouts) through a token-bucket rate limiter into
`<target>/.staging-<digest>/`, its md5 and size checked against the manifest while it streams,
fsynced, and only then renamed to `<target>/<version>/`. TF Serving ignores non-numeric names,
so it never sees half a model. Versions are `YYYYMMDD * 100 + n` for the candidate's day D.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tfship.days import day_number, parse_day
from tfship.errors import ConfigError, StorageError, TfshipError
from tfship.gate import newer_day_served
from tfship.manifest import MANIFEST_FILE, FileEntry, Manifest, ManifestError, parse_manifest
from tfship.storage import LocalStorage, Storage, WebHdfsStorage

RELEASE_LOG = "releases.jsonl"
STAGING_PREFIX = ".staging-"
PRUNING_PREFIX = ".pruning-"
REJECTED_DIR = ".rejected"
LOCK_FILE = ".publish.lock"
MAX_RETRAINS_PER_DAY = 100
UNLIMITED_CHUNK = 4 << 20
_NUMERIC = re.compile(r"[0-9]+")
_LEADING_NUMBER = re.compile(r"^([0-9]+)")
# A retry (or another endpoint) cannot fix these: the candidate itself is wrong.
PERMANENT_CHECKS = frozenset({"manifest", "exists", "md5", "size", "day", "version"})
_RETRIABLE_HDFS_EXCEPTIONS = frozenset({"RetriableException", "StandbyException", "SafeModeException"})

log = logging.getLogger(__name__)


class SupersededError(TfshipError):
    """The target already serves a later day's version: publishing an older day would change nothing served."""


class PublishError(TfshipError):
    """A publication failed a check; names the model, day, host, endpoint, file and the check."""

    def __init__(self, check: str, detail: str, *, model: str, day: str, host: str, endpoint: str, file: str) -> None:
        self.check, self.detail = check, detail
        self.model, self.day, self.host, self.endpoint, self.file = model, day, host, endpoint, file
        super().__init__(
            f"publishing model {model!r} for day {day} to host {host!r} failed the {check} check "
            f"on file {file!r} from endpoint {endpoint}: {detail}"
        )

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help (the candidate or the target is wrong, not the network)."""
        return self.check in PERMANENT_CHECKS

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: rebuild through a helper so the error survives pickling.
        return _rebuild_publish_error, (self.check, self.detail, self.fields())

    def fields(self) -> dict[str, str]:
        """Model, day, host, endpoint and file, for alerts."""
        return {"model": self.model, "day": self.day, "host": self.host, "endpoint": self.endpoint, "file": self.file}


def _rebuild_publish_error(check: str, detail: str, fields: dict[str, str]) -> PublishError:
    return PublishError(check, detail, **fields)


@dataclass(frozen=True)
class Source:
    """Where candidates are read from: an hdfs:// root with its WebHDFS endpoints, or a file:// root."""

    root_uri: str
    endpoints: tuple[str, ...] = ()
    user: str = "root"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        scheme = urlparse(self.root_uri).scheme
        if scheme not in ("file", "hdfs"):
            raise ConfigError(f"source root {self.root_uri!r} has scheme {scheme!r}: use file:// or hdfs://")
        if scheme == "hdfs" and not self.endpoints:
            raise ConfigError(f"source root {self.root_uri!r} is on HDFS but no WebHDFS endpoint is given")

    def endpoint_names(self) -> tuple[str, ...]:
        """The endpoints to choose from; a file:// root is its own single endpoint."""
        return self.endpoints if urlparse(self.root_uri).scheme == "hdfs" else (self.root_uri,)

    def open(self, endpoint: str) -> Storage:
        """A storage over the root that speaks to this one endpoint only (failover is ours)."""
        if urlparse(self.root_uri).scheme == "file":
            return LocalStorage(self.root_uri)
        return WebHdfsStorage(
            self.root_uri, [endpoint], self.user, timeout=(self.connect_timeout_s, self.read_timeout_s)
        )


@dataclass(frozen=True)
class PublishPolicy:
    """How fast, how persistently and how many versions to keep."""

    rate_limit_bps: int = 0
    keep: int = 3
    file_attempts: int = 4
    backoff_s: float = 1.0
    backoff_factor: float = 2.0
    deadline_s: float = 900.0

    def __post_init__(self) -> None:
        if self.rate_limit_bps < 0:
            raise ConfigError(f"rate limit {self.rate_limit_bps} B/s must be >= 0 (0 = unlimited)")
        if self.keep < 1:
            raise ConfigError(f"keep={self.keep}: at least the newest version must be kept")
        if self.file_attempts < 1:
            raise ConfigError(f"file_attempts={self.file_attempts} must be at least 1")
        if self.deadline_s <= 0 or self.backoff_s < 0 or self.backoff_factor < 1:
            raise ConfigError("deadline must be positive, backoff >= 0 and backoff factor >= 1")


@dataclass(frozen=True)
class Release:
    """One line of `<target>/releases.jsonl`."""

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


@dataclass(frozen=True)
class PublishResult:
    """What a publication did: the version serving this digest, and whether bytes moved."""

    version: int
    digest: str
    transferred: bool
    endpoint: str | None
    bytes: int
    seconds: float
    pruned: tuple[int, ...] = ()


class TokenBucket:
    """A byte-rate limiter: `take(n)` sleeps just long enough to keep the average at `rate` B/s.

    The bucket starts empty and holds at most `burst` bytes, so short pauses between files
    (WebHDFS round trips) are made up for, but the long-run rate never exceeds the limit.
    """

    def __init__(
        self,
        rate: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(64 * 1024, rate // 4)
        self._clock, self._sleep = clock, sleep
        self._tokens = 0.0
        self._last = clock()

    def take(self, amount: int) -> None:
        """Account for `amount` bytes, sleeping while the bucket is in debt."""
        if self.rate <= 0:
            return
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate) - amount
        self._last = now
        if self._tokens < 0:
            self._sleep(-self._tokens / self.rate)


def read_chunk_size(rate_limit_bps: int) -> int:
    """Read size: 4 MiB unlimited (fewer round trips through urllib3); about 1/16 s of bytes when limited."""
    return UNLIMITED_CHUNK if rate_limit_bps <= 0 else max(4096, min(UNLIMITED_CHUNK, rate_limit_bps // 16))


# ---------------------------------------------------------------- the target directory


def read_releases(target: Path) -> list[Release]:
    """Every release recorded in `<target>/releases.jsonl` (a torn last line is skipped)."""
    path = target / RELEASE_LOG
    if not path.exists():
        return []
    releases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if "event" in record:  # canary and rollback lines share the log; they are not releases
                continue
            releases.append(Release(**record))
        except (ValueError, TypeError) as err:
            log.warning("%s line %d is not a release record, ignored: %s", path, number, err)
    return releases


def append_release(target: Path, release: Release) -> None:
    """Append one JSON line to the release log and fsync it."""
    path = target / RELEASE_LOG
    existed = path.exists()
    with open(path, "ab") as handle:
        # A run killed mid-append leaves a torn line; start ours on a fresh line.
        if handle.tell() > 0:
            with open(path, "rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) != b"\n":
                    handle.write(b"\n")
        handle.write(json.dumps(asdict(release), sort_keys=True).encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    if not existed:
        fsync_dir(target)


def numeric_versions(target: Path) -> list[int]:
    """Versions TF Serving would see: children whose name is a base-10 integer, ascending."""
    if not target.is_dir():
        return []
    return sorted(int(child.name) for child in target.iterdir() if _NUMERIC.fullmatch(child.name) and child.is_dir())


def rejected_versions(target: Path) -> list[int]:
    """Versions moved aside into `.rejected/` (names start with the version number)."""
    rejected = target / REJECTED_DIR
    if not rejected.is_dir():
        return []
    return sorted(int(match.group(1)) for child in rejected.iterdir() if (match := _LEADING_NUMBER.match(child.name)))


def allocate_version(target: Path, day: dt.date, releases: Sequence[Release]) -> int:
    """`YYYYMMDD * 100 + n`, n the next number of day D not used by a directory, a rejection or the log."""
    base = day_number(day) * 100
    used = {v for v in numeric_versions(target) + rejected_versions(target) if base <= v < base + MAX_RETRAINS_PER_DAY}
    used |= {r.version for r in releases if base <= r.version < base + MAX_RETRAINS_PER_DAY}
    n = max(used) - base + 1 if used else 0
    if n >= MAX_RETRAINS_PER_DAY:
        raise ConfigError(f"day {day.isoformat()} already used all {MAX_RETRAINS_PER_DAY} version numbers in {target}")
    return base + n


def prune_versions(target: Path, keep: int, protect: int | None = None) -> list[int]:
    """Delete all but the newest `keep` versions (and `protect`); each is hidden by a rename first."""
    versions = numeric_versions(target)
    kept = set(versions[-keep:]) | ({protect} if protect is not None else set())
    pruned = []
    for version in versions:
        if version in kept:
            continue
        hidden = target / f"{PRUNING_PREFIX}{version}"
        # Renamed first so TF Serving never lists a half-deleted numeric directory.
        os.rename(target / str(version), hidden)
        shutil.rmtree(hidden)
        pruned.append(version)
        log.info("pruned version %d from %s (keeping the newest %d)", version, target, keep)
    if pruned:
        fsync_dir(target)
    return pruned


def remove_stale_work(target: Path) -> list[str]:
    """Remove `.staging-*` and `.pruning-*` directories left behind by killed runs."""
    removed = []
    for child in sorted(target.iterdir()):
        if child.name.startswith((STAGING_PREFIX, PRUNING_PREFIX)) and child.is_dir():
            shutil.rmtree(child)
            removed.append(child.name)
            log.info("removed %s left behind by an interrupted run", child)
    if removed:
        fsync_dir(target)
    return removed


def published_version(releases: Sequence[Release], digest: str) -> int | None:
    """The version the release log gives this digest, if any (the gate)."""
    for release in reversed(releases):
        if release.digest == digest:
            return release.version
    return None


def version_holding(target: Path, digest: str) -> int | None:
    """A numeric directory whose MANIFEST.json has this digest (a run killed after its rename)."""
    for version in reversed(numeric_versions(target)):
        manifest_path = target / str(version) / MANIFEST_FILE
        try:
            if json.loads(manifest_path.read_text(encoding="utf-8")).get("digest") == digest:
                return version
        except (OSError, ValueError):
            continue
    return None


def fsync_file(path: Path) -> None:
    """Make a written file's data durable (fsync applies to the inode, whichever descriptor)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LockBusy(TfshipError):
    """Another publication into the same target directory is running."""


@contextlib.contextmanager
def target_lock(target: Path, deadline: float) -> Iterator[None]:
    """Hold an exclusive lock on the target (released by the kernel if the process dies)."""
    with open(target / LOCK_FILE, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockBusy(f"another publication still holds {target / LOCK_FILE}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------- errors from the source


def transient_kind(err: BaseException) -> str | None:
    """'timeout' or 'connection' when another try or endpoint may succeed; None when it cannot."""
    try:
        import requests
        import urllib3
        from hdfs.util import HdfsError
    except ImportError:  # file:// only installs
        requests = urllib3 = HdfsError = None  # type: ignore[assignment]
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, TimeoutError) or (
            requests is not None and isinstance(seen, requests.exceptions.Timeout | urllib3.exceptions.TimeoutError)
        ):
            return "timeout"
        if isinstance(seen, ConnectionError) or (
            requests is not None
            and isinstance(
                seen,
                requests.exceptions.ConnectionError
                | requests.exceptions.ChunkedEncodingError
                | urllib3.exceptions.HTTPError,
            )
        ):
            return "connection"
        if HdfsError is not None and isinstance(seen, HdfsError) and seen.exception in _RETRIABLE_HDFS_EXCEPTIONS:
            return "connection"
        seen = seen.__cause__
    return None


class _Mismatch(Exception):
    """A file's bytes disagree with the manifest (size or md5)."""

    def __init__(self, check: str, detail: str, observed: tuple[str, int]) -> None:
        super().__init__(detail)
        self.check, self.detail, self.observed = check, detail, observed


# ---------------------------------------------------------------- one publication


class _Publication:
    """The state of one run: endpoints in their random order, the limiter, the deadline."""

    def __init__(
        self,
        source: Source,
        candidate: str,
        target: Path,
        *,
        host: str,
        run_id: str,
        policy: PublishPolicy,
        rng: random.Random,
        logger: logging.Logger,
        sleep: Callable[[float], None],
    ) -> None:
        self.source, self.candidate, self.target = source, candidate.strip("/"), target
        self.host, self.run_id, self.policy, self.log, self.sleep = host, run_id, policy, logger, sleep
        self.order = list(source.endpoint_names())
        rng.shuffle(self.order)
        self.current = 0
        self._storages: dict[str, Storage] = {}
        self.started = time.monotonic()
        self.deadline = self.started + policy.deadline_s
        self.bucket = TokenBucket(policy.rate_limit_bps)
        self.chunk = read_chunk_size(policy.rate_limit_bps)
        self.model, self.day = "?", "?"
        self.syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfship-fsync")
        # Hashing and writing chunk i overlap the network read of chunk i+1 (both release the GIL).
        self.digester = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfship-md5")
        self.syncs: list[Future[None]] = []

    @property
    def endpoint(self) -> str:
        return self.order[self.current]

    def storage(self) -> Storage:
        if self.endpoint not in self._storages:
            self._storages[self.endpoint] = self.source.open(self.endpoint)
        return self._storages[self.endpoint]

    def error(self, check: str, detail: str, file: str, endpoint: str | None = None) -> PublishError:
        return PublishError(
            check, detail, model=self.model, day=self.day, host=self.host, endpoint=endpoint or self.endpoint, file=file
        )

    def check_deadline(self, file: str) -> None:
        if time.monotonic() > self.deadline:
            raise self.error("deadline", f"the publication ran past its {self.policy.deadline_s:.0f}s deadline", file)

    def with_failover(self, file: str, action: Callable[[Storage], Any]) -> Any:
        """Run `action` against the current endpoint, failing over and backing off on transient errors."""
        observed: set[tuple[str, int]] = set()
        last: tuple[str, str, str] | None = None
        for attempt in range(1, self.policy.file_attempts + 1):
            self.check_deadline(file)
            endpoint = self.endpoint
            try:
                return action(self.storage())
            except _Mismatch as mismatch:
                # Two reads with the same wrong bytes: the source differs from its manifest.
                if mismatch.observed in observed:
                    detail = (
                        f"{mismatch.detail}; a second read gave the same bytes: the source differs from its manifest"
                    )
                    raise self.error(mismatch.check, detail, file, endpoint) from None
                observed.add(mismatch.observed)
                last = (mismatch.check, mismatch.detail, endpoint)
                self.log.warning("%s from %s: %s; reading it again", file, endpoint, mismatch.detail)
            except Exception as err:  # classified right below, re-raised unless transient
                kind = transient_kind(err)
                if kind is None:
                    raise
                last = (kind, f"{type(err).__name__}: {err}", endpoint)
                self.current = (self.current + 1) % len(self.order)
                self.log.warning(
                    "%s from %s failed (%s, attempt %d of %d): %s; next endpoint %s",
                    file, endpoint, kind, attempt, self.policy.file_attempts, err, self.endpoint,
                )  # fmt: skip
            if attempt < self.policy.file_attempts:
                pause = self.policy.backoff_s * self.policy.backoff_factor ** (attempt - 1)
                self.sleep(max(0.0, min(pause, self.deadline - time.monotonic())))
        assert last is not None
        check, detail, endpoint = last
        raise self.error(check, f"gave up after {self.policy.file_attempts} attempts; last: {detail}", file, endpoint)

    def read_manifest(self) -> tuple[Manifest, bytes]:
        """The candidate's manifest (one small read) and its exact bytes."""
        path = posixpath.join(self.candidate, MANIFEST_FILE)

        def read(storage: Storage) -> tuple[Manifest, bytes]:
            if not storage.exists(path):
                raise self.error("manifest", f"{storage.uri(path)} does not exist: the candidate is incomplete", path)
            with storage.open_read(path) as handle:
                raw = handle.read()
            return parse_manifest(raw.decode("utf-8"), storage.uri(path)), raw

        try:
            return self.with_failover(MANIFEST_FILE, read)
        except (ManifestError, UnicodeDecodeError) as err:
            raise self.error("manifest", str(err), MANIFEST_FILE) from None

    def fetch(self, entry: FileEntry, staging: Path) -> int:
        """Stream one file into staging through the limiter, checking its size and md5."""
        destination = staging / entry.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        source_path = posixpath.join(self.candidate, entry.path)

        def download(storage: Storage) -> int:
            md5, size = hashlib.md5(), 0
            with contextlib.ExitStack() as opened:
                try:
                    reader = opened.enter_context(storage.open_read(source_path))
                except StorageError as err:
                    # Only on failure: one more round trip to tell a missing file from a broken link.
                    if transient_kind(err) is None and not storage.exists(source_path):
                        missing = f"{storage.uri(source_path)} is listed in the manifest but missing"
                        raise self.error("exists", missing, entry.path) from None
                    raise
                out = opened.enter_context(open(destination, "wb"))

                def consume(data: bytes) -> None:
                    md5.update(data)
                    out.write(data)

                pending: Future[None] | None = None
                try:
                    while chunk := reader.read(self.chunk):
                        size += len(chunk)
                        if size > entry.size:
                            raise _Mismatch("size", f"more than the {entry.size} bytes the manifest lists", ("", -1))
                        if pending is not None:
                            pending.result()
                        pending = self.digester.submit(consume, chunk)
                        self.bucket.take(len(chunk))
                        self.check_deadline(entry.path)
                finally:
                    if pending is not None:
                        pending.result()  # before the file closes, also when reading failed
            if size != entry.size:
                raise _Mismatch("size", f"{size} bytes arrived, the manifest lists {entry.size}", ("", size))
            if md5.hexdigest() != entry.md5:
                raise _Mismatch(
                    "md5",
                    f"md5 {md5.hexdigest()} of the bytes read, the manifest lists {entry.md5}",
                    (md5.hexdigest(), size),
                )
            # fsync in the background while the next file streams; all are awaited before the rename.
            self.syncs.append(self.syncer.submit(fsync_file, destination))
            return size

        return self.with_failover(entry.path, download)

    def wait_for_syncs(self) -> None:
        """Block until every file written so far is durable (raises the first fsync error)."""
        for pending in self.syncs:
            pending.result()
        self.syncs.clear()


def publish_candidate(
    source: Source,
    candidate: str,
    target: str | os.PathLike[str],
    *,
    host: str,
    run_id: str,
    day: str | dt.date | None = None,
    policy: PublishPolicy | None = None,
    rng: random.Random | None = None,
    logger: logging.Logger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PublishResult:
    """Publish the candidate directory into the TF Serving base path `target`; returns its version."""
    policy = policy or PublishPolicy()
    target_dir = Path(target)
    if not target_dir.is_absolute():
        raise ConfigError(f"target directory {str(target)!r} must be an absolute local path")
    run = _Publication(
        source, candidate, target_dir, host=host, run_id=run_id, policy=policy,
        rng=rng or random.Random(), logger=logger or log, sleep=sleep,
    )  # fmt: skip
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        with target_lock(target_dir, run.deadline):
            remove_stale_work(target_dir)
            return _publish_locked(run, day)
    except LockBusy as err:
        raise run.error("lock", str(err), LOCK_FILE, endpoint="-") from None


def _publish_locked(run: _Publication, day: str | dt.date | None) -> PublishResult:
    manifest, manifest_bytes = run.read_manifest()
    run.model = manifest.model
    manifest_day = parse_day(manifest.day)
    run.day = manifest_day.isoformat()
    if day is not None and (day if isinstance(day, dt.date) else parse_day(str(day))) != manifest_day:
        raise run.error("day", f"the task is for day {day} but the manifest says {manifest.day}", MANIFEST_FILE)

    releases = read_releases(run.target)
    version = published_version(releases, manifest.digest)
    if version is not None:
        run.log.info(
            "%s digest %s is already published as version %d: nothing to transfer", run.target, manifest.digest, version
        )
        return PublishResult(version, manifest.digest, False, None, 0, time.monotonic() - run.started)
    version = version_holding(run.target, manifest.digest)
    if version is not None:
        run.log.info("already published as version %d (directory in place, release log line missing: added)", version)
        _record(run, manifest, version, "(recovered from the version directory)", 0)
        return PublishResult(version, manifest.digest, False, None, 0, time.monotonic() - run.started)

    newest = max(numeric_versions(run.target), default=None)
    if newer_day_served(manifest_day, newest) is not None:
        # A backfill that got past the gate while a newer run published: keep the host as it is.
        raise SupersededError(
            f"{run.target} already holds version {newest} of a later day than {run.day}: "
            "not publishing an older model (the candidate stays in storage)"
        )
    staging = run.target / f"{STAGING_PREFIX}{manifest.digest}"
    run.log.info(
        "publishing %s (model %s, day %s, digest %s, %d files, %d bytes) to %s via %s",
        run.candidate, manifest.model, run.day, manifest.digest, len(manifest.files), manifest.total_bytes,
        run.target, " then ".join(run.order),
    )  # fmt: skip
    transferred = 0
    try:
        staging.mkdir()
        for entry in manifest.files:
            transferred += run.fetch(entry, staging)
            run.log.info("%s: %d bytes, md5 %s verified", entry.path, entry.size, entry.md5)
        run.wait_for_syncs()
        with open(staging / MANIFEST_FILE, "wb") as handle:
            handle.write(manifest_bytes)
            handle.flush()
            os.fsync(handle.fileno())
        for directory, _subdirs, _files in os.walk(staging, topdown=False):
            fsync_dir(Path(directory))
        version = allocate_version(run.target, manifest_day, releases)
        os.rename(staging, run.target / str(version))
        fsync_dir(run.target)
    except BaseException:
        run.syncer.shutdown(wait=True)
        run.digester.shutdown(wait=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    run.syncer.shutdown(wait=True)
    run.digester.shutdown(wait=True)
    seconds = time.monotonic() - run.started
    _record(run, manifest, version, run.endpoint, transferred, seconds)
    run.log.info(
        "published %s as version %d: %d bytes in %.2fs from %s",
        manifest.digest,
        version,
        transferred,
        seconds,
        run.endpoint,
    )
    pruned = prune_versions(run.target, run.policy.keep, protect=version)
    return PublishResult(version, manifest.digest, True, run.endpoint, transferred, seconds, tuple(pruned))


def _record(
    run: _Publication, manifest: Manifest, version: int, endpoint: str, size: int, seconds: float = 0.0
) -> None:
    append_release(
        run.target,
        Release(
            version=version, digest=manifest.digest, model=manifest.model, day=run.day, run_id=run.run_id,
            host=run.host, endpoint=endpoint, bytes=size, seconds=round(seconds, 3),
            published_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        ),
    )  # fmt: skip
