"""The manual rollback of the serving_rollback DAG: one host back to the previous or a named version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from tfship.config import Settings
from tfship.errors import ConfigError
from tfship_airflow.serving import roll_back


def rollback_on_demand(
    settings: Settings, params: Mapping[str, Any], context: Mapping[str, Any], *, log: Any
) -> dict[str, Any]:
    """Reject the newest version ('previous') or every version above a target; record it in the release log."""
    from tfship.constants import LogEvent
    from tfship.release.serving_dir import ServingDir
    from tfship.serving.client import rest_base_url
    from tfship.serving.rollback import versions_to_reject

    model = params["model"]
    if model != settings.model:
        raise AirflowFailException(f"model {model!r} is not the configured model {settings.model!r} (TFSHIP_MODEL)")
    try:
        host = settings.serving_host(params["host"])
    except ConfigError as err:
        raise AirflowFailException(str(err)) from None
    serving_dir = ServingDir(host.serving_dir)
    versions = versions_to_reject(serving_dir, params["target"])
    base_url = rest_base_url(host.address, params["rest_port"])
    if serving_dir.served() is not None:
        result = _revert_labels(serving_dir, model, host.grpc_target, base_url, versions, params["timeout_s"], log)
    else:  # a host served by directory (latest policy): moving the newer versions out is the rollback
        result = roll_back(
            serving_dir=host.serving_dir,
            model=model,
            versions=versions,
            base_url=base_url,
            timeout_s=params["timeout_s"],
            log=log,
        )
    record = {"host": host.name, "model": model, "run_id": context.get("run_id"), "requested": str(params["target"])}
    serving_dir.log.record_event(LogEvent.ROLLBACK, {**record, **result})
    return result


def _revert_labels(
    serving_dir: Any, model: str, grpc_target: str, base_url: str, versions: list[int], timeout_s: float, log: Any
) -> dict[str, Any]:
    """A host served through labels: the target alone and stable (one config reload), then the newer ones out."""
    from tfship.serving.client import ServingClient
    from tfship.serving.grpc_client import GrpcServingClient
    from tfship.serving.rollback import RollbackResult, verify_serves
    from tfship.serving.rollout import LabelledServing, reverted

    target = max(v for v in serving_dir.versions() if v not in versions)
    grpc, rest = GrpcServingClient(grpc_target, model), ServingClient(base_url, model)
    try:
        LabelledServing(serving_dir, model, grpc.reload_config).apply(reverted(target))
        moved = [str(serving_dir.reject(version)) for version in versions]
        previous_canary = verify_serves(serving_dir, rest, target, timeout_s=timeout_s, policy=None)
    finally:
        grpc.close()
        rest.close()
    log.warning("rolled back %s: stable is version %d again; rejected %s", serving_dir.path, target, versions)
    return RollbackResult(tuple(versions), tuple(moved), int(target), previous_canary).to_dict()
