"""The evaluation gate: publish only a candidate that is not worse than what is being served."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path

from tfship.days import day_number


@dataclass(frozen=True)
class GateDecision:
    """Whether to publish, and why, in words on-call can read."""

    publish: bool
    reason: str
    candidate_accuracy: float
    served_accuracy: float | None
    served_version: int | None
    forced: bool

    def to_dict(self) -> dict:
        """JSON-ready (XCom)."""
        return asdict(self)


def newer_day_served(day: dt.date, served_version: int | None) -> str | None:
    """Why a model of day D must not go out when a later day's version serves (a backfill), else None.

    TF Serving's `latest` policy would never load the lower number anyway; publishing it would
    only leave deploy and canary waiting for a version that cannot become AVAILABLE.
    """
    if served_version is None or day_number(day) >= served_version // 100:
        return None
    return (
        f"day {day.isoformat()} is older than the served version {served_version} "
        f"(day {served_version // 100}): backfill run, candidate kept in storage, serving untouched"
    )


def decide(
    candidate_accuracy: float,
    served_accuracy: float | None,
    *,
    served_version: int | None = None,
    tolerance: float,
    floor: float,
    force: bool = False,
) -> GateDecision:
    """Publish if accuracy >= floor and >= served - tolerance (floor only on the first run); force overrides."""
    checks = []
    ok = candidate_accuracy >= floor
    checks.append(f"accuracy {candidate_accuracy:.4f} {'>=' if ok else '<'} floor {floor:.4f}")
    if served_accuracy is not None:
        bar = served_accuracy - tolerance
        better = candidate_accuracy >= bar
        checks.append(
            f"{'>=' if better else '<'} served v{served_version} {served_accuracy:.4f} - tolerance {tolerance:.4f}"
        )
        ok = ok and better
    else:
        checks.append("nothing served yet: floor only")
    reason = "; ".join(checks)
    if force and not ok:
        return GateDecision(True, f"FORCED by force_publish despite: {reason}", candidate_accuracy,
                            served_accuracy, served_version, True)  # fmt: skip
    return GateDecision(ok, reason, candidate_accuracy, served_accuracy, served_version, False)


def served_version_dir(serving_dir: Path) -> tuple[int, Path] | None:
    """The version TF Serving's `latest` policy serves (the highest numeric directory), or None.

    Publication only renames complete, verified directories into numeric names and logs each in
    releases.jsonl, so the highest number on disk is the newest release.
    """
    if not serving_dir.is_dir():
        return None
    versions = {int(p.name): p for p in serving_dir.iterdir() if p.is_dir() and p.name.isdigit()}
    if not versions:
        return None
    newest = max(versions)
    return newest, versions[newest]


def superseded_by(serving_dir: Path, version: int) -> int | None:
    """The highest version above `version` in the serving directory, if any (the `latest` policy serves it)."""
    newest = served_version_dir(serving_dir)
    return newest[0] if newest is not None and newest[0] > version else None
