"""Day-over-day drift: day D's profile and label distribution against a trailing window of earlier days.

Numeric features compare by the Jensen–Shannon divergence of their fixed-bin histograms (base 2,
so 0 = the same distribution, 1 = no overlap at all), the labels by the L-infinity distance of
their shares (the largest change of any one class's share). The baseline pools every earlier day
of the window whose features are complete and carry a profile. A day with no such earlier day
passes, and the report says why.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tfship.constants import DriftAction, DriftStatus
from tfship.data.profile import FEATURES, pool_profiles
from tfship.data.schema import NUM_CLASSES
from tfship.data.stats import read_stats
from tfship.errors import ConfigError, PreprocessError, StorageError, TfshipError


class DriftError(TfshipError):
    """The drift check cannot judge the day (its own statistics are missing); the message says which."""


@dataclass(frozen=True)
class DriftPolicy:
    """The window and the limits (the `drift_*` Params)."""

    window_days: int = 7
    max_js: float = 0.1
    max_label_linf: float = 0.05
    action: DriftAction = DriftAction.HOLD

    def __post_init__(self) -> None:
        if not isinstance(self.window_days, int) or not 1 <= self.window_days <= 366:
            raise ConfigError(f"drift window of {self.window_days!r} days must be within 1..366")
        for name in ("max_js", "max_label_linf"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be within [0, 1]")
        object.__setattr__(self, "action", DriftAction(self.action))


def shares(counts: Sequence[float]) -> list[float]:
    """Counts as shares of their total (all zero stays all zero)."""
    total = math.fsum(counts)
    return [count / total if total else 0.0 for count in counts]


def js_divergence(p_counts: Sequence[float], q_counts: Sequence[float]) -> float:
    """Jensen–Shannon divergence (base 2, within [0, 1]) of two histograms over the same bins."""
    if len(p_counts) != len(q_counts):
        raise ValueError(f"histograms of {len(p_counts)} and {len(q_counts)} bins do not compare")
    p, q = shares(p_counts), shares(q_counts)
    middle = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(a: list[float]) -> float:  # KL(a || middle); a bin empty in `a` adds nothing
        return math.fsum(x * math.log2(x / m) for x, m in zip(a, middle, strict=True) if x > 0)

    return max(0.0, min(1.0, 0.5 * kl(p) + 0.5 * kl(q)))


def linf(p: Sequence[float], q: Sequence[float]) -> tuple[float, int]:
    """The largest absolute difference of two share vectors, and where it is."""
    gaps = [abs(a - b) for a, b in zip(p, q, strict=True)]
    worst = max(range(len(gaps)), key=lambda index: (gaps[index], -index))
    return gaps[worst], worst


@dataclass(frozen=True)
class FeatureDrift:
    """One numeric feature: the divergence, its limit, and the day's and the baseline's summary."""

    name: str
    js: float
    limit: float
    day: dict[str, Any]  # count, mean, std, min, max, range, histogram (counts)
    baseline: dict[str, Any]

    @property
    def moved(self) -> bool:
        """True when the divergence is over the limit."""
        return self.js > self.limit

    def describe(self) -> str:
        """`mean_brightness JS 0.412 > 0.100 (mean 33.1 -> 74.9)`."""
        sign = ">" if self.moved else "<="
        return (
            f"{self.name} JS {self.js:.3f} {sign} {self.limit:.3f} "
            f"(mean {_number(self.baseline.get('mean'))} -> {_number(self.day.get('mean'))})"
        )


@dataclass(frozen=True)
class LabelDrift:
    """The label distribution: L-infinity distance of the shares, its limit, and the shares."""

    linf: float
    limit: float
    worst_label: str
    day_shares: dict[str, float]
    baseline_shares: dict[str, float]

    @property
    def moved(self) -> bool:
        """True when one class's share moved by more than the limit."""
        return self.linf > self.limit

    def describe(self) -> str:
        """`label share L-inf 0.100 > 0.050 (label 3: 0.101 -> 0.000)`."""
        sign = ">" if self.moved else "<="
        before, after = self.baseline_shares[self.worst_label], self.day_shares[self.worst_label]
        return (
            f"label share L-inf {self.linf:.3f} {sign} {self.limit:.3f} "
            f"(label {self.worst_label}: {before:.3f} -> {after:.3f})"
        )


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "—"


@dataclass(frozen=True)
class DriftReport:
    """What `check_drift` hands on: the verdict, what moved and by how much, and the data to plot it."""

    dataset: str
    day: str
    status: DriftStatus
    action: DriftAction
    window_days: int
    baseline_days: tuple[str, ...]
    features: tuple[FeatureDrift, ...] = ()
    labels: LabelDrift | None = None
    unusable_days: dict[str, str] = field(default_factory=dict)  # days of the window left out, and why

    @property
    def moved(self) -> list[str]:
        """Names of what moved over its limit (features, then `label`)."""
        names = [feature.name for feature in self.features if feature.moved]
        return names + (["label"] if self.labels is not None and self.labels.moved else [])

    @property
    def passed(self) -> bool:
        """True unless the day drifted (a day with no history passes)."""
        return self.status != DriftStatus.DRIFTED

    @property
    def holds(self) -> bool:
        """True when publication must be held (drifted, action hold)."""
        return self.status == DriftStatus.DRIFTED and self.action == DriftAction.HOLD

    @property
    def fails(self) -> bool:
        """True when the run must fail (drifted, action fail)."""
        return self.status == DriftStatus.DRIFTED and self.action == DriftAction.FAIL

    @property
    def summary(self) -> str:
        """One line for the record, the gate and the alert."""
        window = f"{self.window_days}-day window before {self.day}"
        if self.status == DriftStatus.NO_HISTORY:
            return f"first day with no history: no earlier day in the {window} has feature statistics; passed"
        against = f"against {len(self.baseline_days)} earlier day(s) ({', '.join(self.baseline_days)})"
        if self.status == DriftStatus.PASSED:
            widest = max(self.features, key=lambda f: f.js / f.limit if f.limit else f.js, default=None)
            parts = [widest.describe()] if widest is not None else []
            parts += [self.labels.describe()] if self.labels is not None else []
            return f"no drift {against}; closest: {'; '.join(parts)}"
        moved = [f.describe() for f in self.features if f.moved]
        moved += [self.labels.describe()] if self.labels is not None and self.labels.moved else []
        return f"drift {against}: {'; '.join(moved)}"

    def render(self) -> str:
        """A readable block for the task log."""
        head = f"drift check of {self.dataset} for {self.day}: {str(self.status).upper()} (action {self.action})"
        lines = [head, f"  {self.summary}"]
        for feature in self.features:
            mark = "MOVED" if feature.moved else "ok   "
            lines.append(f"  [{mark}] {feature.describe()}")
        if self.labels is not None:
            lines.append(f"  [{'MOVED' if self.labels.moved else 'ok   '}] {self.labels.describe()}")
        lines += [f"  left out {day}: {why}" for day, why in sorted(self.unusable_days.items())]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (XCom, release record), with the derived verdict fields."""
        data = asdict(self)
        data.update(
            status=str(self.status),
            action=str(self.action),
            baseline_days=list(self.baseline_days),
            features=[asdict(feature) | {"moved": feature.moved} for feature in self.features],
            labels=asdict(self.labels) | {"moved": self.labels.moved} if self.labels is not None else None,
            moved=self.moved,
            summary=self.summary,
            passed=self.passed,
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        """Back from `to_dict` (the derived fields are recomputed)."""
        features = tuple(
            FeatureDrift(**{key: entry[key] for key in FeatureDrift.__dataclass_fields__})
            for entry in data.get("features") or ()
        )
        labels = data.get("labels")
        return cls(
            dataset=data["dataset"],
            day=data["day"],
            status=DriftStatus(data["status"]),
            action=DriftAction(data["action"]),
            window_days=int(data["window_days"]),
            baseline_days=tuple(data.get("baseline_days") or ()),
            features=features,
            labels=LabelDrift(**{key: labels[key] for key in LabelDrift.__dataclass_fields__}) if labels else None,
            unusable_days=dict(data.get("unusable_days") or {}),
        )


def _label_counts(stats: Mapping[str, Any]) -> list[float]:
    histogram = stats.get("label_histogram") or {}
    return [float(histogram.get(str(label), 0)) for label in range(NUM_CLASSES)]


def compare(day_stats: Mapping[str, Any], history: Mapping[str, Mapping[str, Any]], policy: DriftPolicy) -> DriftReport:
    """Day D's `_stats.json` against the earlier days' (day -> stats); days without a profile are left out."""
    profile = day_stats.get("profile")
    if not profile or not profile.get("count"):
        raise DriftError(
            f"features of {day_stats.get('dataset')} for {day_stats.get('day')} carry no profile with rows: "
            "rerun preprocess (it computes the statistics the drift check compares)"
        )
    usable = {day: stats for day, stats in history.items() if (stats.get("profile") or {}).get("count")}
    unusable = {day: "its _stats.json has no profile (written before drift statistics)" for day in history}
    unusable = {day: why for day, why in unusable.items() if day not in usable}
    common = dict(
        dataset=str(day_stats.get("dataset")),
        day=str(day_stats.get("day")),
        action=policy.action,
        window_days=policy.window_days,
        baseline_days=tuple(sorted(usable)),
        unusable_days=unusable,
    )
    if not usable:
        return DriftReport(status=DriftStatus.NO_HISTORY, **common)  # type: ignore[arg-type]
    baseline = pool_profiles([stats["profile"] for stats in usable.values()])
    features = tuple(
        FeatureDrift(
            name=feature.name,
            js=round(js_divergence(profile["features"][feature.name]["histogram"], baseline_features["histogram"]), 6),
            limit=policy.max_js,
            day=dict(profile["features"][feature.name]),
            baseline=dict(baseline_features),
        )
        for feature in FEATURES
        for baseline_features in [baseline["features"][feature.name]]
    )
    day_shares = shares(_label_counts(day_stats))
    baseline_counts = [math.fsum(counts) for counts in zip(*(_label_counts(s) for s in usable.values()), strict=True)]
    baseline_shares = shares(baseline_counts)
    distance, worst = linf(day_shares, baseline_shares)
    labels = LabelDrift(
        linf=round(distance, 6),
        limit=policy.max_label_linf,
        worst_label=str(worst),
        day_shares={str(label): round(share, 6) for label, share in enumerate(day_shares)},
        baseline_shares={str(label): round(share, 6) for label, share in enumerate(baseline_shares)},
    )
    moved = any(feature.moved for feature in features) or labels.moved
    status = DriftStatus.DRIFTED if moved else DriftStatus.PASSED
    return DriftReport(status=status, features=features, labels=labels, **common)  # type: ignore[arg-type]


def earlier_days(day: dt.date, window: int) -> list[dt.date]:
    """The `window` days before D, oldest first (D itself is never its own baseline)."""
    return [day - dt.timedelta(days=offset) for offset in range(window, 0, -1)]


def check_drift(storage: Any, dataset: str, day: dt.date, policy: DriftPolicy) -> DriftReport:
    """Read D's and the window's `_stats.json` and compare; a day of the window without features is left out."""
    day_stats = read_stats(storage, dataset, day)
    history: dict[str, Mapping[str, Any]] = {}
    missing: dict[str, str] = {}
    for earlier in earlier_days(day, policy.window_days):
        try:
            history[earlier.isoformat()] = read_stats(storage, dataset, earlier)
        except (PreprocessError, StorageError):
            missing[earlier.isoformat()] = "no complete features partition"
    report = compare(day_stats, history, policy)
    if not missing:
        return report
    # Days that were never preprocessed are expected (a gap, the first week): named, not an error.
    return DriftReport(**{**_fields(report), "unusable_days": {**missing, **report.unusable_days}})


def _fields(report: DriftReport) -> dict[str, Any]:
    return {name: getattr(report, name) for name in DriftReport.__dataclass_fields__}
