"""Alerts through an Airflow HTTP connection (a Slack-compatible webhook), and a failure callback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tfship.alerts import build_alert, publish_failure_alert
from tfship.config import ALERT_WEBHOOK_CONN_ID

log = logging.getLogger(__name__)
_ALERTED = "tfship_alert_sent"


def mark_alerted(error: BaseException) -> BaseException:
    """Note on the exception that its task already sent a specific alert, so the callback does not repeat it."""
    setattr(error, _ALERTED, True)
    return error


def fail_after_alert(cause: BaseException, message: str) -> BaseException:
    """An AirflowFailException for `cause`, carrying its alert mark if the alert went out."""
    from airflow.sdk.exceptions import AirflowFailException

    failure = AirflowFailException(message)
    return mark_alerted(failure) if getattr(cause, _ALERTED, False) else failure


def send_alert(
    payload: Mapping[str, Any],
    *,
    http_conn_id: str = ALERT_WEBHOOK_CONN_ID,
    endpoint: str | None = None,
    timeout_s: float = 10.0,
) -> None:
    """POST the payload as JSON to the webhook of the connection (its host, or host + `endpoint`)."""
    from airflow.providers.http.hooks.http import HttpHook

    hook = HttpHook(method="POST", http_conn_id=http_conn_id)
    hook.run(endpoint=endpoint, json=dict(payload), extra_options={"timeout": timeout_s})
    log.info("alert sent through connection %s: %s", http_conn_id, payload.get("text", ""))


def alert_for_failure(context: Mapping[str, Any]) -> dict[str, Any]:
    """The alert payload for a failed task, from its context (exception, ti, task fields)."""
    ti = context.get("ti")
    log_url = getattr(ti, "log_url", None)
    task_label = None
    if ti is not None:
        map_index = getattr(ti, "map_index", -1)
        suffix = f"[{map_index}]" if map_index is not None and map_index >= 0 else ""
        task_label = f"{ti.dag_id}.{ti.task_id}{suffix} try {ti.try_number}"
    error = context.get("exception")
    if error is not None and hasattr(error, "check"):
        return publish_failure_alert(error, log_url=log_url, task=task_label)
    task = context.get("task")
    day = getattr(task, "day", None)
    if day is None and getattr(task, "version", None) is not None:
        from tfship.days import day_of_version

        version_day = day_of_version(task.version)  # deploy and canary know their version, which encodes D
        day = version_day.isoformat() if version_day else None
    return build_alert(
        title="tfship: task failed",
        model=getattr(task, "model", None),
        day=day,
        host=getattr(task, "host", None),
        endpoint=None,
        file=getattr(task, "candidate", None),
        check=type(error).__name__ if error is not None else None,
        detail=str(error) if error is not None else "the task failed without an exception",
        log_url=log_url,
        task=task_label,
    )


def alert_on_failure(context: Mapping[str, Any]) -> None:
    """`on_failure_callback`: send the alert; a broken webhook is logged, never raised over the failure."""
    if getattr(context.get("exception"), _ALERTED, False):
        log.info("the task already sent its own alert for this failure")
        return
    try:
        send_alert(alert_for_failure(context))
    except Exception:  # the task already failed; losing the alert must not hide why
        log.exception("could not send the failure alert through %s", ALERT_WEBHOOK_CONN_ID)
