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
    result = roll_back(
        serving_dir=host.serving_dir,
        model=model,
        versions=versions,
        base_url=rest_base_url(host.name, params["rest_port"]),
        timeout_s=params["timeout_s"],
        log=log,
    )
    record = {"host": host.name, "model": model, "run_id": context.get("run_id"), "requested": str(params["target"])}
    serving_dir.log.record_event(LogEvent.ROLLBACK, {**record, **result})
    return result
