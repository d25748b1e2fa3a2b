"""The canary: a model's golden set sent to its pinned version over REST, and the verdict.

`run_canary` splits `canary.json` into batches sent from C concurrent clients to
`/v1/models/<m>/versions/<v>:predict` and checks HTTP errors, shape (N, 10), rows summing to 1,
accuracy against the labels, agreement with the model's own offline probabilities (argmax
agreement and max absolute difference: training/serving skew) and latency percentiles.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfship.constants import Protocol
from tfship.errors import ConfigError, TfshipError
from tfship.serving.client import ServingClient

CANARY_FILE = "canary.json"
CLASSES = 10


class CanaryError(TfshipError):
    """The canary set is unusable or a rollback could not complete; the message names which."""


@dataclass(frozen=True)
class CanarySet:
    """The golden set saved with a model: inputs, labels and the model's own offline probabilities."""

    signature_name: str
    input_name: str
    ids: tuple[Any, ...]
    labels: tuple[int, ...]
    instances: list[Any]
    probabilities: list[list[float]]

    def __len__(self) -> int:
        return len(self.instances)


def load_canary(path: Path) -> CanarySet:
    """Read and check `canary.json` (equal lengths, 10 probabilities a row)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CanaryError(f"canary set {path} cannot be read: {err}") from None
    missing = {"instances", "labels", "probabilities"} - set(raw)
    if missing:
        raise CanaryError(f"canary set {path} lacks {sorted(missing)}")
    count = len(raw["instances"])
    for key in ("labels", "probabilities"):
        if len(raw[key]) != count:
            raise CanaryError(f"canary set {path}: {len(raw[key])} {key} for {count} instances")
    if count == 0:
        raise CanaryError(f"canary set {path} has no instances")
    if any(len(row) != CLASSES for row in raw["probabilities"]):
        raise CanaryError(f"canary set {path}: offline probabilities are not {CLASSES} per row")
    return CanarySet(
        signature_name=raw.get("signature_name", "serving_default"),
        input_name=raw.get("input_name", "input_image"),
        ids=tuple(raw.get("ids") or range(count)),
        labels=tuple(int(label) for label in raw["labels"]),
        instances=raw["instances"],
        probabilities=raw["probabilities"],
    )


@dataclass(frozen=True)
class CanaryPolicy:
    """Thresholds and load shape of the canary."""

    batch_size: int = 32
    concurrency: int = 4
    accuracy_floor: float = 0.9
    min_argmax_agreement: float = 0.99
    max_abs_diff: float = 1e-3
    sum_tolerance: float = 1e-3
    latency_budget_ms: float = 1000.0  # on p99 of batch requests
    request_timeout_s: float = 30.0
    protocol: Protocol = Protocol.REST

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1:
            raise ConfigError(f"batch_size={self.batch_size} and concurrency={self.concurrency} must be >= 1")
        for name in ("accuracy_floor", "min_argmax_agreement"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be within [0, 1]")
        object.__setattr__(self, "protocol", Protocol(self.protocol))
        if self.max_abs_diff < 0 or self.sum_tolerance < 0 or self.latency_budget_ms <= 0:
            raise ConfigError("max_abs_diff, sum_tolerance must be >= 0 and latency_budget_ms > 0")


@dataclass(frozen=True)
class Check:
    """One line of the verdict."""

    name: str
    passed: bool
    observed: str
    limit: str


@dataclass(frozen=True)
class CanaryVerdict:
    """The outcome: every check, the measured numbers, and pass/fail."""

    model: str
    version: int
    url: str
    rows: int
    batches: int
    concurrency: int
    checks: tuple[Check, ...]
    accuracy: float | None
    argmax_agreement: float | None
    max_abs_diff: float | None
    latency_ms: dict[str, float]
    http_errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(check.passed for check in self.checks)

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that failed."""
        return [check.name for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (XCom, release log)."""
        data = asdict(self)
        data["checks"] = [asdict(check) for check in self.checks]
        data["passed"] = self.passed
        data["failed_checks"] = self.failed_checks
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryVerdict:
        """Back from `to_dict` (the derived `passed` and `failed_checks` are recomputed)."""
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        fields["checks"] = tuple(Check(**check) for check in data.get("checks") or ())
        return cls(**fields)

    def render(self) -> str:
        """A readable block for the task log."""
        head = "PASSED" if self.passed else f"FAILED ({', '.join(self.failed_checks)})"
        lines = [
            f"canary of model {self.model} version {self.version}: {head}",
            f"  {self.rows} rows in {self.batches} batches from {self.concurrency} clients -> {self.url}",
        ]
        width = max(len(check.name) for check in self.checks)
        for check in self.checks:
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"  [{mark}] {check.name.ljust(width)}  {check.observed}  (limit {check.limit})")
        lines.extend(f"  http error: {error}" for error in self.http_errors[:5])
        return "\n".join(lines)


@dataclass(frozen=True)
class CanaryResult:
    """What `canary_serving` hands on for one host: the verdict and, after a failure, the rollback.

    `to_dict` is the flat record the release log and the release record have always held.
    """

    host: str
    run_id: str | None
    verdict: CanaryVerdict
    rollback: dict[str, Any] | None = None
    rollback_error: str | None = None

    @property
    def passed(self) -> bool:
        """True when the verdict passed."""
        return self.verdict.passed

    def to_dict(self) -> dict[str, Any]:
        """`{"host", "run_id", **verdict, "rollback"?, "rollback_error"?}`."""
        data = {"host": self.host, "run_id": self.run_id, **self.verdict.to_dict()}
        if self.rollback is not None:
            data["rollback"] = self.rollback
        if self.rollback_error is not None:
            data["rollback_error"] = self.rollback_error
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryResult:
        """Back from `to_dict`."""
        return cls(
            data.get("host", ""),
            data.get("run_id"),
            CanaryVerdict.from_dict(data),
            data.get("rollback"),
            data.get("rollback_error"),
        )


def _where(base_url: str, grpc_target: str | None, model: str, version: int, label: str | None, policy) -> str:
    """The address the canary spoke to, for the verdict."""
    if policy.protocol == Protocol.GRPC:
        return f"grpc://{grpc_target} {model} " + (f"label {label}" if label else f"version {int(version)}")
    path = f"/v1/models/{model}" + (f"/labels/{label}" if label else f"/versions/{int(version)}")
    return f"{base_url.rstrip('/')}{path}:predict"


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (share in [0, 1])."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def _client(base_url: str, grpc_target: str | None, model: str, policy: CanaryPolicy) -> Any:
    if policy.protocol == Protocol.GRPC:
        if not grpc_target:
            raise ConfigError("a gRPC canary needs the server's gRPC address (host:port)")
        from tfship.serving.grpc_client import GrpcServingClient

        return GrpcServingClient(grpc_target, model, timeout_s=policy.request_timeout_s)
    return ServingClient(base_url, model, timeout_s=policy.request_timeout_s)


def run_canary(
    base_url: str,
    model: str,
    version: int,
    canary: CanarySet,
    policy: CanaryPolicy | None = None,
    *,
    label: str | None = None,
    grpc_target: str | None = None,
) -> CanaryVerdict:
    """Send the canary set to `version` (or to the `label` that should point at it) from concurrent clients.

    Over REST to `base_url`, or over gRPC to `grpc_target` when the policy says so; the answers
    are judged alike.
    """
    import numpy as np

    policy = policy or CanaryPolicy()
    starts = list(range(0, len(canary), policy.batch_size))
    pin = {"label": label} if label is not None else {"version": version}

    def send(start: int) -> tuple[int, float, int, dict[str, Any] | None, str | None]:
        client = _client(base_url, grpc_target, model, policy)
        batch = canary.instances[start : start + policy.batch_size]
        began = time.perf_counter()
        try:
            code, body = client.predict(batch, **pin, signature_name=canary.signature_name)
        except Exception as err:  # noqa: BLE001 - a refused or timed-out request is a canary failure, not a crash
            return start, (time.perf_counter() - began) * 1000, 0, None, f"{type(err).__name__}: {err}"
        finally:
            client.close()
        elapsed = (time.perf_counter() - began) * 1000
        if code != 200:
            return start, elapsed, code, None, f"HTTP {code}: {body.get('error', body)}"
        return start, elapsed, code, body, None

    with ThreadPoolExecutor(max_workers=policy.concurrency, thread_name_prefix="canary") as pool:
        results = list(pool.map(send, starts))
    latencies = [elapsed for _, elapsed, _, _, _ in results]
    errors = [f"rows {start}..: {error}" for start, _, _, _, error in results if error]
    rows: list[Any] = []
    for _, _, _, body, _ in results:
        if body is not None:
            rows.extend(body.get("predictions", []))
    expected_rows = len(canary)
    checks = [Check("http", not errors, f"{len(errors)} of {len(starts)} requests failed", "0")]
    accuracy = agreement = max_diff = None
    shape_ok = False
    probabilities = None
    if not errors:
        try:
            probabilities = np.asarray(rows, dtype=np.float64)
            shape_ok = probabilities.shape == (expected_rows, CLASSES)
        except (ValueError, TypeError):
            probabilities = None
    shape_text = str(tuple(probabilities.shape)) if probabilities is not None else "not a numeric matrix"
    checks.append(Check("shape", shape_ok, shape_text, f"({expected_rows}, {CLASSES})"))
    if shape_ok and probabilities is not None:
        sums = probabilities.sum(axis=1)
        worst_sum = float(np.max(np.abs(sums - 1.0))) if np.all(np.isfinite(sums)) else math.inf
        checks.append(
            Check(
                "sums_to_1",
                worst_sum <= policy.sum_tolerance,
                f"max |sum-1| {worst_sum:.2e}",
                f"{policy.sum_tolerance:.0e}",
            )
        )
        predicted = probabilities.argmax(axis=1)
        accuracy = float(np.mean(predicted == np.asarray(canary.labels)))
        checks.append(
            Check("accuracy", accuracy >= policy.accuracy_floor, f"{accuracy:.4f}", f">= {policy.accuracy_floor}")
        )
        offline = np.asarray(canary.probabilities, dtype=np.float64)
        agreement = float(np.mean(predicted == offline.argmax(axis=1)))
        checks.append(
            Check(
                "argmax_agreement",
                agreement >= policy.min_argmax_agreement,
                f"{agreement:.4f}",
                f">= {policy.min_argmax_agreement}",
            )
        )
        max_diff = float(np.max(np.abs(probabilities - offline))) if np.all(np.isfinite(probabilities)) else math.inf
        checks.append(
            Check("max_abs_diff", max_diff <= policy.max_abs_diff, f"{max_diff:.2e}", f"<= {policy.max_abs_diff:.0e}")
        )
    latency = {f"p{p}": round(percentile(latencies, p / 100), 2) for p in (50, 95, 99)}
    latency["max"] = round(max(latencies), 2) if latencies else math.nan
    checks.append(
        Check(
            "latency_p99",
            latency["p99"] <= policy.latency_budget_ms,
            f"p50 {latency['p50']:.1f} / p95 {latency['p95']:.1f} / p99 {latency['p99']:.1f} ms",
            f"p99 <= {policy.latency_budget_ms:.0f} ms",
        )
    )
    return CanaryVerdict(
        model=model,
        version=int(version),
        url=_where(base_url, grpc_target, model, version, label, policy),
        rows=expected_rows,
        batches=len(starts),
        concurrency=policy.concurrency,
        checks=tuple(checks),
        accuracy=accuracy,
        argmax_agreement=agreement,
        max_abs_diff=max_diff,
        latency_ms=latency,
        http_errors=errors,
    )
