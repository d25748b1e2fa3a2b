"""The evaluation gate: publish only a candidate that is not worse than what is being served."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tfship.constants import DriftAction, DriftStatus
from tfship.release.serving_dir import ModelVersion


@dataclass(frozen=True)
class GateDecision:
    """Whether to publish, and why, in words on-call can read."""

    publish: bool
    reason: str
    candidate_accuracy: float
    served_accuracy: float | None
    served_version: int | None
    forced: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (XCom)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        """Back from `to_dict`."""
        return cls(**data)


def newer_day_served(day: dt.date, served_version: int | None) -> str | None:
    """Why a model of day D must not go out when a later day's version serves (a backfill), else None.

    TF Serving's `latest` policy would never load the lower number anyway; publishing it would
    only leave deploy and canary waiting for a version that cannot become AVAILABLE.
    """
    served_day = ModelVersion(served_version).day if served_version is not None else None
    if served_day is None or day >= served_day:
        return None
    return (
        f"day {day.isoformat()} is older than the served version {served_version} "
        f"(day {served_day.strftime('%Y%m%d')}): backfill run, candidate kept in storage, serving untouched"
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
        return GateDecision(
            True,
            f"FORCED by force_publish despite: {reason}",
            candidate_accuracy,
            served_accuracy,
            served_version,
            True,
        )
    return GateDecision(ok, reason, candidate_accuracy, served_accuracy, served_version, False)


def hold_for_drift(decision: GateDecision, drift: Mapping[str, Any] | None) -> GateDecision:
    """The decision, turned into a hold when the drift check said hold (its report as XCom, or None).

    `force_publish` does not override it: the way past a drift hold is a raised threshold (see the runbook).
    """
    if not drift or drift.get("status") != str(DriftStatus.DRIFTED) or drift.get("action") != str(DriftAction.HOLD):
        return decision
    reason = f"held by the drift check: {drift.get('summary')}"
    return GateDecision(
        False, reason, decision.candidate_accuracy, decision.served_accuracy, decision.served_version, False
    )
