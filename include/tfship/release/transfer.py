"""Moving a candidate's bytes: endpoints in random order with failover, one token-bucket rate limit
over a few parallel streams, and streamed reads whose size and md5 are checked against the manifest
while they arrive. A connection lost at byte k of a file goes on from k (WebHDFS/HttpFS `OPEN` with
`offset`, on the same or the next endpoint) with the md5 carried over; memory stays at a few chunks
per stream whatever the model's size.

Pure transport: it knows WebHDFS/HttpFS endpoints and local files, not serving dirs or versions.
Every failure is a `TransferError` naming the check, the endpoint and the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import posixpath
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tfship.config import StorageConfig
from tfship.constants import PublishCheck
from tfship.errors import ConfigError, StorageError, TfshipError
from tfship.release.manifest import MANIFEST_FILE, FileEntry, Manifest, ManifestError, parse_manifest
from tfship.release.throttle import TokenBucket, read_chunk_size
from tfship.storage import LocalStorage, Storage, WebHdfsStorage, fsync_file

_RETRIABLE_HDFS_EXCEPTIONS = frozenset({"RetriableException", "StandbyException", "SafeModeException"})

log = logging.getLogger(__name__)


class TransferError(TfshipError):
    """A read failed a check; names the check, the endpoint and the file."""

    def __init__(self, check: PublishCheck, detail: str, *, endpoint: str, file: str) -> None:
        self.check, self.detail, self.endpoint, self.file = PublishCheck(check), detail, endpoint, file
        super().__init__(f"{file} from {endpoint} failed the {self.check} check: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_transfer_error, (str(self.check), self.detail, self.endpoint, self.file)


def _rebuild_transfer_error(check: str, detail: str, endpoint: str, file: str) -> TransferError:
    return TransferError(PublishCheck(check), detail, endpoint=endpoint, file=file)


@dataclass(frozen=True)
class Source:
    """Where candidates are read from (the storage root) and how patiently."""

    storage: StorageConfig
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        scheme = urlparse(self.storage.root_uri).scheme
        if scheme not in ("file", "hdfs"):
            raise ConfigError(f"source root {self.storage.root_uri!r} has scheme {scheme!r}: use file:// or hdfs://")

    @property
    def is_hdfs(self) -> bool:
        """True for an hdfs:// root (read through its WebHDFS/HttpFS endpoints)."""
        return urlparse(self.storage.root_uri).scheme == "hdfs"

    def endpoint_names(self) -> tuple[str, ...]:
        """The endpoints to choose from; a file:// root is its own single endpoint."""
        return self.storage.webhdfs_endpoints if self.is_hdfs else (self.storage.root_uri,)

    def open(self, endpoint: str) -> Storage:
        """A storage over the root that speaks to this one endpoint only (failover is ours)."""
        if not self.is_hdfs:
            return LocalStorage(self.storage.root_uri)
        timeout = (self.connect_timeout_s, self.read_timeout_s)
        return WebHdfsStorage(self.storage.root_uri, [endpoint], self.storage.hdfs_user, timeout=timeout)


@dataclass(frozen=True)
class TransferPolicy:
    """How fast and how persistently to read."""

    rate_limit_bps: int = 0
    file_attempts: int = 4
    backoff_s: float = 1.0
    backoff_factor: float = 2.0
    deadline_s: float = 900.0
    streams: int = 4  # files read at once (models with many variable shards), all under the one rate limit
    resume: bool = True  # False: a broken read starts the file over (the old way; kept for the benchmark)

    def __post_init__(self) -> None:
        if not 1 <= self.streams <= 64:
            raise ConfigError(f"streams={self.streams} must be within 1..64")
        if self.rate_limit_bps < 0:
            raise ConfigError(f"rate limit {self.rate_limit_bps} B/s must be >= 0 (0 = unlimited)")
        if self.file_attempts < 1:
            raise ConfigError(f"file_attempts={self.file_attempts} must be at least 1")
        if self.deadline_s <= 0 or self.backoff_s < 0 or self.backoff_factor < 1:
            raise ConfigError("deadline must be positive, backoff >= 0 and backoff factor >= 1")


def transient_kind(err: BaseException) -> PublishCheck | None:
    """TIMEOUT or CONNECTION when another try or endpoint may succeed; None when it cannot."""
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
            return PublishCheck.TIMEOUT
        broken = (
            requests.exceptions.ConnectionError
            | requests.exceptions.ChunkedEncodingError
            | urllib3.exceptions.HTTPError
            if requests is not None
            else ()
        )
        if isinstance(seen, ConnectionError) or (broken and isinstance(seen, broken)):
            return PublishCheck.CONNECTION
        if HdfsError is not None and isinstance(seen, HdfsError) and seen.exception in _RETRIABLE_HDFS_EXCEPTIONS:
            return PublishCheck.CONNECTION
        seen = seen.__cause__
    return None


class _Mismatch(Exception):
    """A file's bytes disagree with the manifest (size or md5)."""

    def __init__(self, check: PublishCheck, detail: str, observed: tuple[str, int]) -> None:
        super().__init__(detail)
        self.check, self.detail, self.observed = check, detail, observed


class _Stopped(Exception):
    """Another stream failed: this one stops reading."""


class _Partial:
    """What one file's read has produced so far: bytes on disk and the md5 over them, kept across resumes."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        self.out = open(destination, "wb")
        self.md5 = hashlib.md5()
        self.size = 0

    def add(self, data: bytes) -> None:
        self.md5.update(data)
        self.out.write(data)

    def restart(self) -> None:
        """Back to byte 0: the next read starts over."""
        self.out.seek(0)
        self.out.truncate()
        self.md5, self.size = hashlib.md5(), 0

    def close(self) -> None:
        self.out.close()


class Transfer:
    """One candidate's transfer: endpoints in a random order, the limiter, the deadline, background fsyncs."""

    def __init__(
        self,
        source: Source,
        candidate: str,
        *,
        policy: TransferPolicy,
        rng: random.Random,
        logger: logging.Logger,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source, self.candidate, self.policy = source, candidate.strip("/"), policy
        self.log, self.sleep = logger, sleep
        self.order = list(source.endpoint_names())
        rng.shuffle(self.order)
        self.current = 0
        self._failover_lock = threading.Lock()
        self._local = threading.local()  # one client per stream: a requests session is not shared
        self.started = time.monotonic()
        self.deadline = self.started + policy.deadline_s
        self.bucket = TokenBucket(policy.rate_limit_bps)
        self.chunk = read_chunk_size(policy.rate_limit_bps)
        self.stopped = threading.Event()
        self.syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfship-fsync")
        # Hashing and writing chunk i overlap the network read of chunk i+1 (both release the GIL).
        self.digester = ThreadPoolExecutor(max_workers=policy.streams, thread_name_prefix="tfship-md5")
        self.syncs: list[Future[None]] = []

    @property
    def endpoint(self) -> str:
        """The endpoint reads go to now."""
        return self.order[self.current]

    def _storage(self) -> Storage:
        storages = getattr(self._local, "storages", None)
        if storages is None:
            storages = self._local.storages = {}
        if self.endpoint not in storages:
            storages[self.endpoint] = self.source.open(self.endpoint)
        return storages[self.endpoint]

    def _fail_over(self, failed: str) -> None:
        with self._failover_lock:
            if self.endpoint == failed:  # another stream may have moved on already
                self.current = (self.current + 1) % len(self.order)

    def error(self, check: PublishCheck, detail: str, file: str, endpoint: str | None = None) -> TransferError:
        """A TransferError at the current (or given) endpoint."""
        return TransferError(check, detail, endpoint=endpoint or self.endpoint, file=file)

    def check_deadline(self, file: str) -> None:
        """Raise the deadline check once the transfer ran past its deadline."""
        if time.monotonic() > self.deadline:
            detail = f"the publication ran past its {self.policy.deadline_s:.0f}s deadline"
            raise self.error(PublishCheck.DEADLINE, detail, file)

    def _with_failover(
        self, file: str, action: Callable[[Storage], Any], on_mismatch: Callable[[], None] | None = None
    ) -> Any:
        """Run `action` against the current endpoint, failing over and backing off on transient errors."""
        observed: set[tuple[str, int]] = set()
        last: tuple[PublishCheck, str, str] | None = None
        attempts = self.policy.file_attempts
        for attempt in range(1, attempts + 1):
            self.check_deadline(file)
            endpoint = self.endpoint
            try:
                return action(self._storage())
            except _Mismatch as mismatch:
                # Two reads with the same wrong bytes: the source differs from its manifest.
                if mismatch.observed in observed:
                    detail = (
                        f"{mismatch.detail}; a second read gave the same bytes: the source differs from its manifest"
                    )
                    raise self.error(mismatch.check, detail, file, endpoint) from None
                observed.add(mismatch.observed)
                last = (mismatch.check, mismatch.detail, endpoint)
                self.log.warning("%s from %s: %s; reading it again from byte 0", file, endpoint, mismatch.detail)
                if on_mismatch is not None:
                    on_mismatch()
            except Exception as err:  # classified right below, re-raised unless transient
                kind = transient_kind(err)
                if kind is None:
                    raise
                last = (kind, f"{type(err).__name__}: {err}", endpoint)
                self._fail_over(endpoint)
                self.log.warning(
                    "%s from %s failed (%s, attempt %d of %d): %s; next endpoint %s",
                    *(file, endpoint, kind, attempt, attempts, err, self.endpoint),
                )
            if attempt < attempts:
                pause = self.policy.backoff_s * self.policy.backoff_factor ** (attempt - 1)
                self.sleep(max(0.0, min(pause, self.deadline - time.monotonic())))
        assert last is not None
        check, detail, endpoint = last
        raise self.error(check, f"gave up after {attempts} attempts; last: {detail}", file, endpoint)

    def read_manifest(self) -> tuple[Manifest, bytes]:
        """The candidate's manifest (one small read) and its exact bytes."""
        path = posixpath.join(self.candidate, MANIFEST_FILE)

        def read(storage: Storage) -> tuple[Manifest, bytes]:
            if not storage.exists(path):
                detail = f"{storage.uri(path)} does not exist: the candidate is incomplete"
                raise self.error(PublishCheck.MANIFEST, detail, path)
            with storage.open_read(path) as handle:
                raw = handle.read()
            return parse_manifest(raw.decode("utf-8"), storage.uri(path)), raw

        try:
            return self._with_failover(MANIFEST_FILE, read)
        except (ManifestError, UnicodeDecodeError) as err:
            raise self.error(PublishCheck.MANIFEST, str(err), MANIFEST_FILE) from None

    def fetch(self, entry: FileEntry, destination: Path) -> int:
        """Stream one file to `destination` through the limiter, checking its size and md5; fsync in the background.

        A connection lost mid-file resumes at the byte reached (the md5 goes on); a file whose
        source changed meanwhile (another size now, or a wrong md5 at the end) is read again from 0.
        """
        destination.parent.mkdir(parents=True, exist_ok=True)
        source_path = posixpath.join(self.candidate, entry.path)
        partial = _Partial(destination)

        def download(storage: Storage) -> int:
            if partial.size and not self.policy.resume:
                partial.restart()
            elif partial.size:
                self._check_unchanged(storage, source_path, entry, partial)
            with contextlib.ExitStack() as opened:
                try:
                    reader = opened.enter_context(storage.open_read(source_path, offset=partial.size))
                except StorageError as err:
                    # Only on failure: one more round trip to tell a missing file from a broken link.
                    if transient_kind(err) is None and not storage.exists(source_path):
                        missing = f"{storage.uri(source_path)} is listed in the manifest but missing"
                        raise self.error(PublishCheck.EXISTS, missing, entry.path) from None
                    raise
                self._stream(reader, entry, partial)
            if partial.size != entry.size:
                detail = f"{partial.size} bytes arrived, the manifest lists {entry.size}"
                raise _Mismatch(PublishCheck.SIZE, detail, ("", partial.size))
            digest = partial.md5.hexdigest()
            if digest != entry.md5:
                detail = f"md5 {digest} of the bytes read, the manifest lists {entry.md5}"
                raise _Mismatch(PublishCheck.MD5, detail, (digest, partial.size))
            return partial.size

        try:
            size = self._with_failover(entry.path, download, on_mismatch=partial.restart)
        finally:
            partial.close()
        # fsync in the background while the next file streams; all are awaited before the rename.
        self.syncs.append(self.syncer.submit(fsync_file, destination))
        return size

    def _check_unchanged(self, storage: Storage, source_path: str, entry: FileEntry, partial: _Partial) -> None:
        """Before resuming at byte k: the source must still be the file the manifest lists, else start over."""
        size = storage.size(source_path)
        if size != entry.size:
            self.log.warning(
                "%s changed at the source while it was read (%d bytes now, the manifest lists %d): "
                "reading it again from byte 0",
                entry.path,
                size,
                entry.size,
            )
            partial.restart()
        else:
            self.log.warning(
                "%s: resuming at byte %d of %d from %s", entry.path, partial.size, entry.size, self.endpoint
            )

    def _stream(self, reader: Any, entry: FileEntry, partial: _Partial) -> None:
        """Copy the reader's bytes into `partial`; hashing and writing run beside the next read."""
        pending: Future[None] | None = None
        try:
            while chunk := reader.read(self.chunk):
                if self.stopped.is_set():
                    raise _Stopped(entry.path)
                if partial.size + len(chunk) > entry.size:
                    too_long = f"more than the {entry.size} bytes the manifest lists"
                    raise _Mismatch(PublishCheck.SIZE, too_long, ("", -1))
                if pending is not None:
                    pending.result()
                pending = self.digester.submit(partial.add, chunk)
                partial.size += len(chunk)
                self.bucket.take(len(chunk))
                self.check_deadline(entry.path)
        finally:
            if pending is not None:
                pending.result()  # written before any retry reads on, also when reading failed

    def fetch_all(self, entries: Sequence[FileEntry], staging: Path, on_done: Callable[[FileEntry], None]) -> int:
        """Every file into `staging`, `policy.streams` at a time, largest first; the first failure stops the rest."""
        ordered = sorted(entries, key=lambda e: e.size, reverse=True)
        total = 0
        with ThreadPoolExecutor(max_workers=self.policy.streams, thread_name_prefix="tfship-stream") as pool:
            futures = {pool.submit(self.fetch, entry, staging / entry.path): entry for entry in ordered}
            try:
                for future in as_completed(futures):
                    total += future.result()
                    on_done(futures[future])
            except BaseException:
                self.stopped.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return total

    def wait_for_syncs(self) -> None:
        """Block until every file written so far is durable (raises the first fsync error)."""
        for pending in self.syncs:
            pending.result()
        self.syncs.clear()

    def close(self) -> None:
        """Stop the background threads (after their queued work)."""
        self.stopped.set()
        self.syncer.shutdown(wait=True)
        self.digester.shutdown(wait=True)
