"""Every status vocabulary of the project, one Enum each.

`StrEnum`: members compare equal to their plain strings and serialise as them, so JSON files
(release records, `releases.jsonl`) and XComs keep exactly the words they always had.

Vocabulary used throughout (one name per concept):
- candidate: a trained model in storage (`models/<m>/candidates/<D>-<digest8>/`) waiting to go out;
- serving dir: one serving host's TF Serving base path for the model (`<serving_dir>/<version>/`);
- publication: a candidate copied, verified and renamed into a serving dir as a new version;
- release: one run's attempt to put its candidate in front of clients on every serving host
  (publication, deploy, canary per host); its outcome is the run's release record;
- release log: `<serving_dir>/releases.jsonl`, a host's own account of publications, canaries
  and rollbacks.
"""

from __future__ import annotations

from enum import StrEnum


class ReleaseStatus(StrEnum):
    """The outcome of one run's release, over every serving host."""

    RELEASED = "released"
    HELD = "held"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"


class HostStatus(StrEnum):
    """What one run's release did on one serving host."""

    RELEASED = "released"
    ROLLED_BACK = "rolled back"
    ROLLBACK_FAILED = "rollback failed"
    CANARY_FAILED = "canary failed"
    NOT_PUBLISHED = "not published"
    NOT_DEPLOYED = "not deployed"
    NO_CANARY = "no canary"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"  # the host already held a later day's version: left alone
    STOPPED = "stopped"  # the rolling release stopped at an earlier host: this one was never touched


class VersionState(StrEnum):
    """TF Serving's states of one model version (ModelVersionStatus.State)."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


class LogEvent(StrEnum):
    """Kinds of event lines in a release log (publication lines carry no `event` key)."""

    CANARY = "canary"
    ROLLBACK = "rollback"
    PUBLICATION_FAILED = "publication_failed"  # a host-side check failed; nothing was published


class ServingLabel(StrEnum):
    """TF Serving version labels a host's model config carries: clients use stable, the canary checks canary."""

    STABLE = "stable"
    CANARY = "canary"


class RolloutStep(StrEnum):
    """Where one host's release ended (the per-host record of a rolling release)."""

    PROMOTED = "promoted"  # the new version serves as stable
    ROLLED_BACK = "rolled back"  # its canary failed: the previous version is stable again
    STOPPED = "stopped"  # an earlier host failed: this host was never touched
    SUPERSEDED = "superseded"  # a later version already sits here: left alone


class Protocol(StrEnum):
    """How a client speaks to TF Serving."""

    REST = "rest"
    GRPC = "grpc"


class ContainerChange(StrEnum):
    """What reconciling the serving container did."""

    KEPT = "kept"
    CREATED = "created"
    RECREATED = "recreated"


class PublishCheck(StrEnum):
    """The check a publication failed. Permanent ones fail at once: a retry would read the same bytes
    or meet the same host; the others (lock, deadline, the network) are retried."""

    MANIFEST = "manifest"
    EXISTS = "exists"
    MD5 = "md5"
    SIZE = "size"
    DAY = "day"
    VERSION = "version"
    # The host: too little room for the model and the margin (before or during the transfer), a
    # read-only filesystem, a directory this worker may not write, a file where a directory
    # belongs, a version directory whose content someone changed by hand.
    SPACE = "space"
    READ_ONLY = "read_only"
    PERMISSION = "permission"
    NOT_A_DIRECTORY = "not_a_directory"
    CONFLICT = "conflict"
    DEADLINE = "deadline"
    LOCK = "lock"
    CONNECTION = "connection"
    TIMEOUT = "timeout"

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help: the candidate itself is wrong, not the network."""
        return self in _PERMANENT_CHECKS


_PERMANENT_CHECKS = frozenset(
    {
        PublishCheck.MANIFEST,
        PublishCheck.EXISTS,
        PublishCheck.MD5,
        PublishCheck.SIZE,
        PublishCheck.DAY,
        PublishCheck.VERSION,
        PublishCheck.SPACE,
        PublishCheck.READ_ONLY,
        PublishCheck.PERMISSION,
        PublishCheck.NOT_A_DIRECTORY,
        PublishCheck.CONFLICT,
    }
)


class StrategyKind(StrEnum):
    """Which tf.distribute strategy a training process uses."""

    MULTI_WORKER = "multi_worker"
    GPUS = "gpus"
    CPU_REPLICAS = "cpu_replicas"


class VersionPolicy(StrEnum):
    """TF Serving's model_version_policy choices."""

    LATEST = "latest"
    ALL = "all"
    SPECIFIC = "specific"


class DriftStatus(StrEnum):
    """The verdict of the day-over-day drift check on a day's features."""

    PASSED = "passed"
    DRIFTED = "drifted"
    NO_HISTORY = "no history"  # no earlier day in the window has feature statistics: nothing to compare


class DriftAction(StrEnum):
    """What a drifted day does to the run (the `drift_action` Param)."""

    HOLD = "hold"  # train and evaluate, but publish nothing; alert
    FAIL = "fail"  # fail check_drift: nothing downstream runs; alert


class InfraCheck(StrEnum):
    """The checks of infra validation: a candidate in a throwaway TF Serving before any host sees it."""

    STAGE = "stage"  # the candidate copied locally, every md5 checked against its manifest
    LOAD = "load"  # the server loaded the SavedModel (it did not exit, no END with an error)
    AVAILABLE = "available"  # the version was AVAILABLE within the timeout
    WARMUP = "warmup"  # the candidate's warmup records (if any) were replayed on load
    SIGNATURE = "signature"  # serving_default: input_image float (-1,28,28,1) -> probabilities float (-1,10)
    PROBABILITIES = "probabilities"  # answers are finite, within [0, 1] and sum to 1 per row
    CANARY = "canary"  # the canary rows answered, matching the candidate's offline probabilities
