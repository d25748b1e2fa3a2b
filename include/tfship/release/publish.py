"""md5-gated publication of a candidate into one serving host's serving dir: the coordination.

The candidate's MANIFEST.json is read first (one small read) and its digest looked up in the
host's release log: a model already published is never transferred again. Otherwise the host is
checked (a writable directory with room for the model plus a margin), every file is streamed
(see `tfship.release.transfer`) into `.staging-<digest>/`, checked against the manifest, fsynced,
and only then renamed to its version number (see `tfship.release.serving_dir`). TF Serving
ignores non-numeric names, so it never sees half a model. A host-side failure (no room, a
read-only or unwritable filesystem, a file where the directory should be, a version directory
someone filled by hand) is a `PublishError` with its own check; nothing half-written stays behind.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfship.constants import LogEvent, PublishCheck
from tfship.days import parse_day
from tfship.errors import ConfigError, TfshipError
from tfship.release.gate import newer_day_served
from tfship.release.manifest import MANIFEST_FILE, Manifest, parse_manifest
from tfship.release.serving_dir import LOCK_FILE, LockBusy, ModelVersion, Publication, ServingDir
from tfship.release.transfer import Source, Transfer, TransferError, TransferPolicy
from tfship.storage import fsync_dir

HOST_ENDPOINT = "-"  # what a host-side failure names as its endpoint: the source is not at fault
_HOST_CHECKS = {
    errno.ENOSPC: PublishCheck.SPACE,
    errno.EDQUOT: PublishCheck.SPACE,
    errno.EROFS: PublishCheck.READ_ONLY,
    errno.EACCES: PublishCheck.PERMISSION,
    errno.EPERM: PublishCheck.PERMISSION,
    errno.ENOTDIR: PublishCheck.NOT_A_DIRECTORY,
}

log = logging.getLogger(__name__)


class SupersededError(TfshipError):
    """The serving dir already holds a later day's version: publishing an older day would change nothing served."""


class PublishError(TfshipError):
    """A publication failed a check; names the model, day, host, endpoint, file and the check."""

    def __init__(self, check: str, detail: str, *, model: str, day: str, host: str, endpoint: str, file: str) -> None:
        self.check, self.detail = PublishCheck(check), detail
        self.model, self.day, self.host, self.endpoint, self.file = model, day, host, endpoint, file
        super().__init__(
            f"publishing model {model!r} for day {day} to host {host!r} failed the {self.check} check "
            f"on file {file!r} from endpoint {endpoint}: {detail}"
        )

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help (the candidate or the host is wrong, not the network)."""
        return self.check.permanent

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: rebuild through a helper so the error survives pickling.
        return _rebuild_publish_error, (str(self.check), self.detail, self.fields())

    def fields(self) -> dict[str, str]:
        """Model, day, host, endpoint and file, for alerts."""
        return {"model": self.model, "day": self.day, "host": self.host, "endpoint": self.endpoint, "file": self.file}


def _rebuild_publish_error(check: str, detail: str, fields: dict[str, str]) -> PublishError:
    return PublishError(check, detail, **fields)


@dataclass(frozen=True)
class PublishPolicy(TransferPolicy):
    """How fast and how persistently to read (TransferPolicy), how many versions to keep, and the room to leave."""

    keep: int = 3
    # Free space the host must keep beyond the model: a full disk breaks more than this publication.
    space_margin_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep < 1:
            raise ConfigError(f"keep={self.keep}: at least the newest version must be kept")
        if self.space_margin_bytes < 0:
            raise ConfigError(f"space_margin_bytes={self.space_margin_bytes} must be >= 0")


@dataclass(frozen=True)
class PublishResult:
    """What a publication did on one host: the version serving this digest, and whether bytes moved.

    It is what `publish_model` hands to `deploy_serving` (to_dict / from_dict over XCom).
    """

    host: str
    serving_dir: str
    version: int
    digest: str
    transferred: bool
    endpoint: str | None
    bytes: int
    seconds: float
    pruned: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "version": int(self.version), "pruned": [int(v) for v in self.pruned]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PublishResult:
        """Back from `to_dict`."""
        return cls(**{**data, "pruned": tuple(data.get("pruned") or ())})


def host_check(err: OSError) -> PublishCheck | None:
    """The host-side check an OS error fails (no room, read-only, not allowed, not a directory), if any."""
    return _HOST_CHECKS.get(err.errno) if err.errno is not None else None


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or would hold it: its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def publish_candidate(
    source: Source,
    candidate: str,
    serving_dir: str | os.PathLike[str],
    *,
    host: str,
    run_id: str,
    day: str | dt.date | None = None,
    policy: PublishPolicy | None = None,
    rng: random.Random | None = None,
    logger: logging.Logger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PublishResult:
    """Publish the candidate directory into the host's serving dir; returns its version."""
    policy = policy or PublishPolicy()
    if not Path(serving_dir).is_absolute():
        raise ConfigError(f"serving dir {str(serving_dir)!r} must be an absolute local path")
    transfer = Transfer(source, candidate, policy=policy, rng=rng or random.Random(), logger=logger or log, sleep=sleep)
    run = _Run(ServingDir(serving_dir), transfer, host=host, run_id=run_id, policy=policy)
    try:
        run.prepare_serving_dir()
        with run.target.lock(transfer.deadline):
            run.target.remove_stale_work()
            return run.publish(day)
    except LockBusy as err:
        raise run.error(PublishCheck.LOCK, str(err), LOCK_FILE, endpoint=HOST_ENDPOINT) from None
    except TransferError as err:
        raise run.error(err.check, err.detail, err.file, err.endpoint) from None
    except OSError as err:
        check = host_check(err)
        if check is None:
            raise
        raise run.host_error(check, err) from err
    finally:
        transfer.close()


class _Run:
    """One publication: the serving dir, the transfer, and what the manifest said (for error messages)."""

    def __init__(self, target: ServingDir, transfer: Transfer, *, host: str, run_id: str, policy: PublishPolicy):
        self.target, self.transfer, self.host, self.run_id, self.policy = target, transfer, host, run_id, policy
        self.log = transfer.log
        self.model, self.day, self.digest = "?", "?", None
        self.total_bytes = 0
        self.written = 0

    def error(self, check: PublishCheck, detail: str, file: str, endpoint: str | None = None) -> PublishError:
        fields = {"model": self.model, "day": self.day, "host": self.host}
        return PublishError(check, detail, **fields, endpoint=endpoint or self.transfer.endpoint, file=file)

    def host_error(self, check: PublishCheck, err: OSError) -> PublishError:
        """A host-side failure, named with the path and the cause; recorded in the release log when it can be."""
        path = err.filename or str(self.target.path)
        cause = err.strerror or str(err)
        if check == PublishCheck.SPACE:
            detail = (
                f"the filesystem of {self.target.path} filled up during the transfer ({cause}): {self.written} of "
                f"{self.total_bytes} bytes written, {free_bytes(self.target.path)} bytes free now; staging removed"
            )
        elif check == PublishCheck.READ_ONLY:
            detail = f"{path} is on a read-only filesystem ({cause})"
        elif check == PublishCheck.PERMISSION:
            detail = f"{path} may not be written by this worker (uid {os.geteuid()}): {cause}"
        else:
            detail = f"{path}: a path component is not a directory ({cause})"
        return self.failed(check, detail, path)

    def failed(self, check: PublishCheck, detail: str, path: str) -> PublishError:
        """The error for a host-side check, after a best-effort line in the release log."""
        event = {
            "check": str(check),
            "detail": detail,
            "host": self.host,
            "run_id": self.run_id,
            "model": self.model,
            "day": self.day,
            "digest": self.digest,
        }
        try:
            if self.target.log.path.exists():
                self.target.log.record_event(LogEvent.PUBLICATION_FAILED, event)
        except OSError as err:  # a full or read-only disk takes no line either
            self.log.warning("could not record the failure in %s: %s", self.target.log.path, err)
        return self.error(check, detail, path, endpoint=HOST_ENDPOINT)

    def result(self, version: int, digest: str, transferred: bool, size: int = 0, pruned=()) -> PublishResult:
        endpoint = self.transfer.endpoint if transferred else None
        seconds = time.monotonic() - self.transfer.started
        pruned = tuple(int(v) for v in pruned)
        return PublishResult(
            self.host, str(self.target.path), int(version), digest, transferred, endpoint, size, seconds, pruned
        )

    def prepare_serving_dir(self) -> None:
        """The serving dir exists and is a directory (a file in its place is named, not overwritten)."""
        path = self.target.path
        if path.exists() and not path.is_dir():
            raise self.failed(PublishCheck.NOT_A_DIRECTORY, f"{path} is a file, not a directory", str(path))
        path.mkdir(parents=True, exist_ok=True)

    def publish(self, day: str | dt.date | None) -> PublishResult:
        manifest, manifest_bytes = self.transfer.read_manifest()
        self.model, self.digest = manifest.model, manifest.digest
        manifest_day = parse_day(manifest.day)
        self.day = manifest_day.isoformat()
        if day is not None and (day if isinstance(day, dt.date) else parse_day(str(day))) != manifest_day:
            detail = f"the task is for day {day} but the manifest says {manifest.day}"
            raise self.error(PublishCheck.DAY, detail, MANIFEST_FILE)

        publications = self.target.log.publications()
        version = self.target.log.published_version(manifest.digest)
        if version is not None:
            self.check_holds(version, manifest.digest)
            self.log.info(
                "%s digest %s is already published as version %d: nothing to transfer",
                self.target.path,
                manifest.digest,
                version,
            )
            return self.result(version, manifest.digest, False)
        version = self.target.holding(manifest.digest)
        if version is not None:
            self.log.info(
                "already published as version %d (directory in place, release log line missing: added)", version
            )
            self.record(manifest, version, "(recovered from the version directory)", 0)
            return self.result(version, manifest.digest, False)

        newest = self.target.newest()
        if newer_day_served(manifest_day, newest) is not None:
            # A backfill that got past the gate while a newer run published: keep the host as it is.
            raise SupersededError(
                f"{self.target.path} already holds version {newest} of a later day than {self.day}: "
                "not publishing an older model (the candidate stays in storage)"
            )
        self.check_room(manifest, manifest_bytes)
        version, transferred = self.stage_and_rename(manifest, manifest_bytes, manifest_day, publications)
        seconds = time.monotonic() - self.transfer.started
        self.record(manifest, version, self.transfer.endpoint, transferred, seconds)
        self.log.info(
            "published %s as version %d: %d bytes in %.2fs from %s",
            manifest.digest,
            version,
            transferred,
            seconds,
            self.transfer.endpoint,
        )
        pruned = self.target.prune(self.policy.keep, protect=version)
        return self.result(version, manifest.digest, True, transferred, pruned)

    def check_holds(self, version: int, digest: str) -> None:
        """A logged version directory must still hold its digest: one changed by hand is named, never overwritten."""
        manifest_path = self.target.version_dir(version) / MANIFEST_FILE
        if not manifest_path.exists():
            return  # pruned or rejected since: the log is the record of what was published
        try:
            held = parse_manifest(manifest_path.read_text(encoding="utf-8"), str(manifest_path)).digest
        except (OSError, ValueError, TfshipError) as err:
            held = f"an unreadable manifest ({err})"
        if held != digest:
            detail = (
                f"{self.target.version_dir(version)} holds {held}, but the release log says digest {digest} was "
                f"published as version {version}: someone changed it by hand; left untouched"
            )
            raise self.failed(PublishCheck.CONFLICT, detail, str(self.target.version_dir(version)))

    def check_room(self, manifest: Manifest, manifest_bytes: bytes) -> None:
        """Refuse before the first byte when the model and the margin do not fit on the host's filesystem."""
        self.total_bytes = manifest.total_bytes + len(manifest_bytes)
        need = self.total_bytes + self.policy.space_margin_bytes
        free = free_bytes(self.target.path)
        if free < need:
            detail = (
                f"{self.target.path} has {free} bytes free; the model needs {self.total_bytes} bytes plus a margin of "
                f"{self.policy.space_margin_bytes} = {need}: nothing was written"
            )
            raise self.failed(PublishCheck.SPACE, detail, str(self.target.path))

    def stage_and_rename(
        self, manifest: Manifest, manifest_bytes: bytes, day: dt.date, publications: list[Publication]
    ) -> tuple[ModelVersion, int]:
        """Every file into `.staging-<digest>`, verified and durable, then one rename to the new version."""
        staging = self.target.staging_dir(manifest.digest)
        self.log.info(
            "publishing %s (model %s, day %s, digest %s, %d files, %d bytes) to %s via %s, %d streams",
            self.transfer.candidate,
            manifest.model,
            self.day,
            manifest.digest,
            len(manifest.files),
            manifest.total_bytes,
            self.target.path,
            " then ".join(self.transfer.order),
            self.policy.streams,
        )

        def verified(entry: Any) -> None:
            self.written += entry.size
            self.log.info("%s: %d bytes, md5 %s verified", entry.path, entry.size, entry.md5)

        try:
            staging.mkdir()
            transferred = self.transfer.fetch_all(manifest.files, staging, verified)
            self.transfer.wait_for_syncs()
            with open(staging / MANIFEST_FILE, "wb") as handle:
                handle.write(manifest_bytes)
                handle.flush()
                os.fsync(handle.fileno())
            for directory, _subdirs, _files in os.walk(staging, topdown=False):
                fsync_dir(Path(directory))
            version = self.target.allocate(day, publications)
            final = self.target.version_dir(version)
            if final.exists():  # made by hand since the numbers were read: never replaced
                detail = f"{final} appeared while the model was staged (made by hand?); left untouched"
                raise self.failed(PublishCheck.CONFLICT, detail, str(final))
            os.rename(staging, final)
            fsync_dir(self.target.path)
        except BaseException:
            self.transfer.close()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return version, transferred

    def record(self, manifest: Manifest, version: int, endpoint: str, size: int, seconds: float = 0.0) -> None:
        publication = Publication(
            version=int(version),
            digest=manifest.digest,
            model=manifest.model,
            day=self.day,
            run_id=self.run_id,
            host=self.host,
            endpoint=endpoint,
            bytes=size,
            seconds=round(seconds, 3),
            published_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        self.target.log.record_publication(publication)
