"""The release record of one run: what its release did on every serving host, and why. Pure data.

`release_record` turns what the run's tasks handed on (the candidate, the gate decision, and per
serving host the publication, the deployment and the canary result) into one JSON-ready dict
with a `status`. Records live at `releases/<model>/<D>/<run-slug>.json` on the storage root;
`tfship.report.page` renders them.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfship.constants import DriftAction, DriftStatus, HostStatus, ReleaseStatus, RolloutStep
from tfship.days import parse_day
from tfship.errors import ConfigError, PathEscapeError, StorageError
from tfship.paths import check_name, model_releases_dir, normalize_relative, release_record_path
from tfship.storage import Storage

SCHEMA_VERSION = 1
# The candidate files the page shows or links; anything else in a candidate stays private.
ARTIFACT_FILES = frozenset(
    {"cv_results.png", "training.png", "metrics.json", "canary.json", "cv_results.json", "MANIFEST.json"}
)
CV_PLOT = "cv_results.png"
TRAINING_PLOT = "training.png"
MAX_HTTP_ERRORS = 5  # a dead server fails every batch: the first few say enough
MAX_LOG_LINES = 10


# ---------------------------------------------------------------- the record


def _as_version(value: Any) -> int | None:
    """A published version from XCom (int, or a rendered string); anything else means none."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _aligned(values: Sequence[Any] | None, count: int) -> list[Any]:
    """One entry per host: missing trailing entries (a copy that never ran) become None."""
    values = list(values or [])
    return (values + [None] * count)[:count]


def _candidate(train: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not train:
        return None
    return {
        "path": train.get("candidate"),
        "uri": train.get("candidate_uri"),
        "digest": train.get("digest"),
        "reused": train.get("reused"),
        "eval_accuracy": train.get("eval_accuracy"),
        "eval_loss": train.get("eval_loss"),
    }


def _gate(decision: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not decision:
        return None
    gate = {
        key: decision.get(key)
        for key in ("publish", "reason", "candidate_accuracy", "served_accuracy", "served_version", "forced")
    }
    candidate, served = gate["candidate_accuracy"], gate["served_accuracy"]
    gate["accuracy_delta"] = (
        round(float(candidate) - float(served), 6) if candidate is not None and served is not None else None
    )
    return gate


def _canary(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    canary = {key: value for key, value in record.items() if key not in ("host", "run_id")}
    errors = list(canary.get("http_errors") or [])
    if len(errors) > MAX_HTTP_ERRORS:
        canary["http_errors"] = [*errors[:MAX_HTTP_ERRORS], f"... {len(errors) - MAX_HTTP_ERRORS} more"]
    return canary


def _drift(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The drift check's report as handed on (histograms included: the page plots them)."""
    return dict(report) if isinstance(report, Mapping) and report.get("status") else None


def _infra(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Infra validation's result, with the server's log cut to its last lines."""
    if not isinstance(result, Mapping) or "passed" not in result:
        return None
    return {**result, "log_tail": list(result.get("log_tail") or [])[-MAX_LOG_LINES:]}


def _rollout(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    keys = ("order", "step", "previous", "labels", "memory", "drained", "reason")
    return {key: record.get(key) for key in keys}


def _host_status(
    published: int | None,
    deploy: Any,
    canary: Mapping[str, Any] | None,
    superseded: str | None = None,
    rollout: Mapping[str, Any] | None = None,
) -> HostStatus:
    """What happened on one host, in the words of the page."""
    if superseded:
        return HostStatus.SUPERSEDED
    if rollout and rollout.get("step") == RolloutStep.STOPPED:
        return HostStatus.STOPPED
    if canary is not None:
        if canary.get("passed"):
            return HostStatus.RELEASED
        if canary.get("rollback_error"):
            return HostStatus.ROLLBACK_FAILED
        return HostStatus.ROLLED_BACK if canary.get("rollback") else HostStatus.CANARY_FAILED
    if published is None:
        return HostStatus.NOT_PUBLISHED
    if deploy is None:
        return HostStatus.NOT_DEPLOYED
    return HostStatus.NO_CANARY


def _summary(
    status: ReleaseStatus,
    hosts: list[dict[str, Any]],
    version: int | None,
    gate: dict[str, Any] | None,
    drift: Mapping[str, Any] | None = None,
) -> str:
    if status == ReleaseStatus.HELD:
        reason = str(gate["reason"]) if gate else "?"
        # A drift hold is the gate's reason already ("held by the drift check: ...", release.gate).
        drifted = dict(drift or {})
        held_by_drift = drifted.get("status") == DriftStatus.DRIFTED and drifted.get("action") == DriftAction.HOLD
        return reason if held_by_drift else f"held by the gate: {reason}"
    names = ", ".join(host["host"] for host in hosts)
    if status == ReleaseStatus.RELEASED:
        forced = " (FORCED past the gate)" if gate and gate.get("forced") else ""
        return f"version {version} released to {names}: canary passed{forced}"
    parts = []
    for host in hosts:
        if host["status"] == HostStatus.RELEASED:
            continue
        canary = host["canary"] or {}
        checks = ", ".join(canary.get("failed_checks") or [])
        if host["status"] == HostStatus.ROLLED_BACK:
            serving = (canary.get("rollback") or {}).get("serving")
            parts.append(f"canary failed on {host['host']} ({checks}): rolled back, version {serving} serves again")
        elif host["status"] == HostStatus.ROLLBACK_FAILED:
            parts.append(f"canary failed on {host['host']} ({checks}) and the rollback failed")
        elif host["status"] == HostStatus.CANARY_FAILED:
            parts.append(f"canary failed on {host['host']} ({checks})")
        elif host["status"] == HostStatus.STOPPED:
            parts.append(f"{host['host']}: untouched (the rollout stopped at an earlier host)")
        else:
            parts.append(f"{host['host']}: {host['status']}")
    return "; ".join(parts)


def release_record(
    *,
    model: str,
    day: str,
    run_id: str,
    hosts: Sequence[str],
    train: Mapping[str, Any] | None,
    decision: Mapping[str, Any] | None,
    published: Sequence[Any] | None = None,
    deploys: Sequence[Mapping[str, Any] | None] | None = None,
    canaries: Sequence[Mapping[str, Any] | None] | None = None,
    dag_id: str | None = None,
    superseded: Sequence[str | None] | None = None,
    rollouts: Sequence[Mapping[str, Any] | None] | None = None,
    drift: Mapping[str, Any] | None = None,
    infra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-ready record of one run; per-host sequences follow `hosts`, a missing piece is None.

    `rollouts` are the hosts' parts of a rolling release (order, step, labels, memory); a host whose
    copy stopped because an earlier host failed is recorded as stopped. `drift` is check_drift's
    report, `infra` infra_validate's result (None when they did not run).
    """
    check_name("model", model)
    day = parse_day(day).isoformat()
    hosts = [str(host) for host in hosts]
    versions = [_as_version(value) for value in _aligned(published, len(hosts))]
    deploy_list = _aligned(deploys, len(hosts))
    canary_list = [_canary(record) for record in _aligned(canaries, len(hosts))]
    superseded_list = _aligned(superseded, len(hosts))
    rollout_list = [_rollout(record) for record in _aligned(rollouts, len(hosts))]
    candidate, gate = _candidate(train), _gate(decision)
    held = gate is not None and not gate["publish"]
    host_entries = [
        {
            "host": host,
            "published_version": version,
            "deploy": dict(deploy) if deploy else None,
            "canary": canary,
            "status": str(HostStatus.SKIPPED if held else _host_status(version, deploy, canary, newer, rollout)),
            **({"superseded": newer} if newer and not held else {}),
            **({"rollout": rollout} if rollout else {}),
        }
        for host, version, deploy, canary, newer, rollout in zip(
            hosts, versions, deploy_list, canary_list, superseded_list, rollout_list, strict=True
        )
    ]
    published_versions = [v for v in versions if v is not None]
    version = max(published_versions) if published_versions else None
    drift_report, infra_result = _drift(drift), _infra(infra)
    if candidate is None and drift_report is not None and drift_report.get("status") == DriftStatus.DRIFTED:
        status, summary = ReleaseStatus.FAILED, f"stopped by the drift check: {drift_report.get('summary')}"
    elif candidate is None:
        status, summary = ReleaseStatus.FAILED, "no training result: train failed or did not run"
    elif gate is None:
        status, summary = ReleaseStatus.FAILED, "no gate decision: evaluate failed or did not run"
    elif held:
        status = ReleaseStatus.HELD
        summary = _summary(status, host_entries, version, gate, drift_report)
    elif infra_result is not None and not infra_result["passed"]:
        reason = infra_result.get("reason")
        status, summary = ReleaseStatus.FAILED, f"infra validation failed, nothing was published: {reason}"
    elif not host_entries:
        status, summary = ReleaseStatus.FAILED, "the gate said publish but there is no serving host"
    else:
        states = {entry["status"] for entry in host_entries}
        if states == {HostStatus.SUPERSEDED}:
            # A later day's version got out first (an overlapping backfill): nothing older was served.
            status, summary = (
                ReleaseStatus.HELD,
                "superseded: " + "; ".join(f"{e['host']}: {e['superseded']}" for e in host_entries),
            )
        elif states == {HostStatus.RELEASED}:
            status = ReleaseStatus.RELEASED
        elif states <= {HostStatus.RELEASED, HostStatus.ROLLED_BACK, HostStatus.STOPPED}:
            status = ReleaseStatus.ROLLED_BACK
        else:
            status = ReleaseStatus.FAILED
        if states != {HostStatus.SUPERSEDED}:
            summary = _summary(status, host_entries, version, gate, drift_report)
    return {
        "schema": SCHEMA_VERSION,
        "model": model,
        "day": day,
        "run_id": run_id,
        "dag_id": dag_id,
        "status": str(status),
        "summary": summary,
        "version": version,
        "candidate": candidate,
        "gate": gate,
        "hosts": host_entries,
        "drift": drift_report,
        "infra_validation": infra_result,
    }


def format_accuracy(value: Any) -> str:
    """An accuracy with four decimals, or an em dash when there is none."""
    return f"{float(value):.4f}" if isinstance(value, int | float) else "—"


def render_release_text(record: Mapping[str, Any]) -> str:
    """A few readable lines for the task log."""
    lines = [
        f"release of model {record.get('model')} for day {record.get('day')}, run {record.get('run_id')}: "
        f"{str(record.get('status')).upper()}",
        f"  {record.get('summary')}",
    ]
    gate = record.get("gate")
    if gate:
        served = gate.get("served_accuracy")
        against = (
            f" vs served v{gate.get('served_version')} {served:.4f} ({gate.get('accuracy_delta'):+.4f})"
            if isinstance(served, int | float)
            else " (nothing served to compare with)"
        )
        lines.append(f"  candidate accuracy {format_accuracy(gate.get('candidate_accuracy'))}{against}")
    drift, infra = record.get("drift"), record.get("infra_validation")
    if drift:
        lines.append(f"  drift check: {str(drift.get('status')).upper()}: {drift.get('summary')}")
    if infra:
        lines.append(f"  infra validation: {'PASSED' if infra.get('passed') else 'FAILED'}: {infra.get('reason')}")
    for host in record.get("hosts") or []:
        canary = host.get("canary") or {}
        latency = canary.get("latency_ms") or {}
        p99 = f", canary p99 {latency['p99']} ms" if "p99" in latency else ""
        lines.append(f"  {host.get('host')}: {host.get('status')}, published {host.get('published_version')}{p99}")
    return "\n".join(lines)


# ---------------------------------------------------------------- storage


def write_release_record(storage: Storage, record: Mapping[str, Any]) -> str:
    """Write the record atomically to its path (a rerun of the run overwrites it); return the path."""
    path = release_record_path(record["model"], record["day"], record["run_id"])
    data = json.dumps(record, indent=2, sort_keys=True, default=str).encode("utf-8")
    with storage.open_write(path) as handle:
        handle.write(data)
    return path


@dataclass(frozen=True)
class ReleaseHistory:
    """Records newest first, and the files that could not be read (never a crash)."""

    records: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)


def _order(record: Mapping[str, Any]) -> tuple[str, int, str]:
    version = record.get("version")
    return (str(record.get("day") or ""), version if isinstance(version, int) else -1, str(record.get("run_id")))


def read_release_records(storage: Storage, model: str, limit: int = 30) -> ReleaseHistory:
    """The newest `limit` records of a model (by day, then version, then run id); unreadable files are noted."""
    base = model_releases_dir(model)
    if limit < 1 or not storage.is_dir(base):
        return ReleaseHistory([])
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    # Day directories newest first: whole days are read until the limit is reached (sorting is by day first).
    for day in sorted(storage.list(base), reverse=True):
        if len(records) >= limit:
            break
        day_dir = posixpath.join(base, day)
        try:
            names = storage.list(day_dir)
        except StorageError:
            continue  # a stray file next to the day directories
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue  # a writer's temporary file
            path = posixpath.join(day_dir, name)
            try:
                with storage.open_read(path) as handle:
                    record = json.loads(handle.read().decode("utf-8"))
            except (OSError, ValueError) as err:
                skipped.append(f"{path}: {type(err).__name__}: {err}")
                continue
            if not isinstance(record, dict) or not {"run_id", "day", "status"} <= set(record):
                skipped.append(f"{path}: not a release record")
                continue
            records.append(record)
    records.sort(key=_order, reverse=True)
    return ReleaseHistory(records[:limit], skipped)


_CANDIDATE_NAME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9a-f]{8}$")


def candidate_artifact_path(candidate: str, file_name: str) -> str:
    """`<candidate>/<file>` for a page artifact; refuses any path but `models/<m>/candidates/<D>-<digest8>`."""
    if file_name not in ARTIFACT_FILES:
        allowed = ", ".join(sorted(ARTIFACT_FILES))
        raise ConfigError(f"{file_name!r} is not an artifact the release view shows ({allowed})")
    if ".." in candidate.split("/"):
        raise PathEscapeError(f"candidate {candidate!r} contains '..'")
    parts = normalize_relative(candidate).split("/")
    if len(parts) != 4 or parts[0] != "models" or parts[2] != "candidates" or not _CANDIDATE_NAME.match(parts[3]):
        raise ConfigError(f"{candidate!r} is not a candidate directory (models/<model>/candidates/<D>-<digest8>)")
    check_name("model", parts[1])
    return posixpath.join(*parts, file_name)
