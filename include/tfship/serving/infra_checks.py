"""Infra validation's verdict: the result a candidate gets, and the pure checks on what the server answered.

`tfship.serving.infra_validate` runs the throwaway server and calls these; the result is recorded
beside the candidate (`models/<m>/infra_validation/<D>-<digest8>.json`) and in the release record.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tfship.constants import InfraCheck
from tfship.data.schema import IMAGE_SIDE, NUM_CLASSES
from tfship.paths import infra_validation_path
from tfship.release.manifest import ManifestError, read_manifest
from tfship.serving.canary import Check
from tfship.storage import Storage
from tfship.training.model import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"


@dataclass(frozen=True)
class InfraValidationResult:
    """What `infra_validate` hands on and records beside the candidate: every check, and why it failed."""

    model: str
    day: str
    candidate: str
    digest: str | None
    image: str
    version: int
    container: str
    checks: tuple[Check, ...]
    seconds: dict[str, float]
    warmup_records: int | None = None
    canary: dict[str, Any] | None = None
    log_tail: tuple[str, ...] = ()
    run_id: str | None = None

    @property
    def passed(self) -> bool:
        """True when every check ran and passed."""
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that failed."""
        return [check.name for check in self.checks if not check.passed]

    @property
    def reason(self) -> str:
        """Why it failed, in one line (the first failed check), or that it passed."""
        failed = [check for check in self.checks if not check.passed]
        if not failed:
            return f"passed: {len(self.checks)} checks in {self.seconds.get('total', 0):.1f}s on {self.image}"
        return f"{failed[0].name} failed: {failed[0].observed} (expected {failed[0].limit})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived verdict."""
        data = asdict(self)
        data.update(
            checks=[asdict(check) for check in self.checks],
            log_tail=list(self.log_tail),
            passed=self.passed,
            failed_checks=self.failed_checks,
            reason=self.reason,
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InfraValidationResult:
        """Back from `to_dict`."""
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        fields["checks"] = tuple(Check(**check) for check in data.get("checks") or ())
        fields["log_tail"] = tuple(data.get("log_tail") or ())
        return cls(**fields)

    def render(self) -> str:
        """A readable block for the task log."""
        head = "PASSED" if self.passed else f"FAILED ({', '.join(self.failed_checks)})"
        lines = [
            f"infra validation of {self.candidate} (version {self.version}, image {self.image}): {head}",
            f"  container {self.container}; seconds {self.seconds}",
        ]
        for check in self.checks:
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"  [{mark}] {check.name:<13}  {check.observed}  (expected {check.limit})")
        if not self.passed and self.log_tail:
            lines += ["  server log (last lines):", *(f"    {line}" for line in self.log_tail)]
        return "\n".join(lines)


def count_warmup_records(path: Path) -> int | None:
    """Records in a TFRecord warmup file (framing only: length, crc, data, crc), or None without one."""
    if not path.is_file():
        return None
    count = 0
    with open(path, "rb") as handle:
        while header := handle.read(12):
            if len(header) < 12:
                raise ValueError(f"{path} ends inside a record header")
            (length,) = struct.unpack("<Q", header[:8])
            handle.seek(length + 4, os.SEEK_CUR)
            count += 1
    return count


def expected_signature() -> dict[str, Any]:
    """The project's serving signature: input_image float (-1,28,28,1) -> probabilities float (-1,10)."""
    return {
        "inputs": {INPUT_NAME: ("DT_FLOAT", [-1, IMAGE_SIDE, IMAGE_SIDE, 1])},
        "outputs": {OUTPUT_NAME: ("DT_FLOAT", [-1, NUM_CLASSES])},
    }


def _tensors(entries: Mapping[str, Any]) -> dict[str, tuple[str, list[int]]]:
    found = {}
    for name, info in entries.items():
        dims = (info.get("tensor_shape") or {}).get("dim") or []
        found[name] = (str(info.get("dtype")), [int(dim.get("size", -1)) for dim in dims])
    return found


def signature_check(metadata: Mapping[str, Any]) -> Check:
    """Compare the metadata's `serving_default` with the project's signature (names, dtypes, shapes)."""
    signatures = ((metadata.get("metadata") or {}).get("signature_def") or {}).get("signature_def") or {}
    wanted = expected_signature()
    limit = f"{SIGNATURE_NAME}: {wanted['inputs']} -> {wanted['outputs']}"
    if SIGNATURE_NAME not in signatures:
        return Check(InfraCheck.SIGNATURE, False, f"no {SIGNATURE_NAME} signature (has {sorted(signatures)})", limit)
    signature = signatures[SIGNATURE_NAME]
    found = {"inputs": _tensors(signature.get("inputs") or {}), "outputs": _tensors(signature.get("outputs") or {})}
    wrong = [
        f"{side} {found[side]}"
        for side in ("inputs", "outputs")
        if {name: (dtype, list(shape)) for name, (dtype, shape) in wanted[side].items()} != found[side]
    ]
    observed = "; ".join(wrong) if wrong else f"{SIGNATURE_NAME} as expected"
    return Check(InfraCheck.SIGNATURE, not wrong, observed, limit)


def probabilities_check(code: int, body: Mapping[str, Any], rows: int, tolerance: float) -> Check:
    """A predict answer of `rows` rows: 10 finite values in [0, 1] a row, each row summing to 1."""
    limit = f"({rows}, {NUM_CLASSES}) finite, within [0, 1], rows summing to 1 ± {tolerance:g}"
    if code != 200:
        return Check(InfraCheck.PROBABILITIES, False, f"HTTP {code}: {str(body.get('error', body))[:300]}", limit)
    predictions = body.get("predictions")
    if isinstance(predictions, list) and predictions and isinstance(predictions[0], dict):
        predictions = [row.get(OUTPUT_NAME) for row in predictions]  # several outputs: rows keyed by name
    try:
        values = [[float(value) for value in row] for row in predictions or []]
    except (TypeError, ValueError):
        return Check(InfraCheck.PROBABILITIES, False, f"not a numeric matrix: {str(predictions)[:200]}", limit)
    if len(values) != rows or any(len(row) != NUM_CLASSES for row in values):
        shape = f"({len(values)}, {sorted({len(row) for row in values})})"
        return Check(InfraCheck.PROBABILITIES, False, f"shape {shape}", limit)
    flat = [value for row in values for value in row]
    if not all(math.isfinite(value) for value in flat):
        return Check(InfraCheck.PROBABILITIES, False, "NaN or infinite values", limit)
    low, high = min(flat), max(flat)
    worst_sum = max(abs(math.fsum(row) - 1.0) for row in values)
    ok = low >= 0.0 and high <= 1.0 and worst_sum <= tolerance
    observed = f"values in [{low:.3g}, {high:.3g}], max |row sum - 1| {worst_sum:.2e}"
    return Check(InfraCheck.PROBABILITIES, ok, observed, limit)


def write_result(storage: Storage, result: InfraValidationResult) -> str:
    """Record the result beside the candidate (`models/<m>/infra_validation/<D>-<digest8>.json`); return the path."""
    path = infra_validation_path(result.candidate)
    with storage.open_write(path) as handle:
        handle.write(json.dumps(result.to_dict(), indent=2, sort_keys=True).encode("utf-8"))
    return path


def read_result(storage: Storage, candidate: str) -> InfraValidationResult | None:
    """The result recorded beside the candidate, or None when there is none or it does not read back."""
    path = infra_validation_path(candidate)
    if not storage.exists(path):
        return None
    with storage.open_read(path) as handle:
        text = handle.read()
    try:
        return InfraValidationResult.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError):
        return None


def recorded_pass(storage: Storage, candidate: str, *, image: str) -> InfraValidationResult | None:
    """The pass recorded for this candidate on this image, if any: a rerun stands on it instead of a new container.

    Only a pass counts (a failure may have been the worker's, `available` on a slow one, and is tried
    again), and only for the digest of the candidate's manifest now and the same image: the result
    belongs to both.
    """
    recorded = read_result(storage, candidate)
    if recorded is None or not recorded.passed or recorded.image != image:
        return None
    try:
        digest = read_manifest(storage, candidate).digest
    except ManifestError:
        return None  # the full validation says what is wrong with it
    return recorded if recorded.digest == digest else None
