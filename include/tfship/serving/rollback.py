"""Rollback on one host: versions out of the serving dir, then proof that the previous one serves again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tfship.errors import ConfigError
from tfship.release.serving_dir import ServingDir
from tfship.serving.canary import CANARY_FILE, CanaryError, CanaryPolicy, load_canary, run_canary
from tfship.serving.client import ServingClient, ServingError


@dataclass(frozen=True)
class RollbackResult:
    """Which versions were moved aside and which version serves now."""

    rejected: tuple[int, ...]
    moved_to: tuple[str, ...]
    serving: int
    previous_canary: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "rejected": list(self.rejected), "moved_to": list(self.moved_to)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RollbackResult:
        """Back from `to_dict`."""
        return cls(tuple(data["rejected"]), tuple(data["moved_to"]), data["serving"], data.get("previous_canary"))


def reject_versions(
    serving_dir: ServingDir,
    versions: Sequence[int],
    client: ServingClient,
    *,
    timeout_s: float = 300.0,
    policy: CanaryPolicy | None = None,
) -> RollbackResult:
    """Move versions aside, wait until the newest remaining one is AVAILABLE and answers its canary set."""
    moved = [str(serving_dir.reject(v)) for v in versions]
    previous = serving_dir.newest()
    if previous is None:
        raise CanaryError(f"no version is left in {serving_dir.path} after rejecting {list(versions)}: nothing serves")
    previous_canary = verify_serves(serving_dir, client, previous, timeout_s=timeout_s, policy=policy)
    return RollbackResult(tuple(int(v) for v in versions), tuple(moved), int(previous), previous_canary)


def verify_serves(
    serving_dir: ServingDir, client: ServingClient, previous: int, *, timeout_s: float, policy: CanaryPolicy | None
) -> dict | None:
    """Wait until `previous` is AVAILABLE and answers its own canary set (or one predict); its verdict."""
    try:
        client.wait_until_available(previous, timeout_s=timeout_s)
    except ServingError as err:
        raise CanaryError(
            f"rolled back to version {previous} in {serving_dir.path}, but it did not come back: {err}"
        ) from err
    previous_canary = None
    canary_path = serving_dir.version_dir(previous) / CANARY_FILE
    if canary_path.exists():
        verdict = run_canary(client.base_url, client.model, previous, load_canary(canary_path), policy)
        previous_canary = verdict.to_dict()
        if not verdict.passed:
            raise CanaryError(f"version {previous} serves again but its canary fails:\n{verdict.render()}")
    else:
        code, body = client.predict([[[[0]] * 28] * 28], version=previous)
        if code != 200:
            raise CanaryError(f"version {previous} serves again but a predict got HTTP {code}: {body}")
    return previous_canary


def versions_to_reject(serving_dir: ServingDir, wanted: str | int) -> list[int]:
    """For a manual rollback: 'previous' -> the newest version; N -> every version above N (N must exist)."""
    versions = serving_dir.versions()
    if not versions:
        raise CanaryError(f"{serving_dir.path} holds no version to roll back")
    if str(wanted) == "previous":
        if len(versions) < 2:
            raise CanaryError(f"{serving_dir.path} holds only version {versions[0]}: there is no previous version")
        return [int(versions[-1])]
    try:
        number = int(wanted)
    except ValueError:
        raise ConfigError(f"rollback target {wanted!r} is neither 'previous' nor a version number") from None
    if number not in versions:
        raise CanaryError(f"version {number} is not in {serving_dir.path} (present: {[int(v) for v in versions]})")
    newer = [int(v) for v in versions if v > number]
    if not newer:
        raise CanaryError(f"version {number} is already the newest in {serving_dir.path}: nothing to roll back")
    return sorted(newer, reverse=True)
