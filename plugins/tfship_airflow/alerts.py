"""Alerts through an Airflow HTTP connection (a Slack-compatible webhook): the one way they leave.

Operators that know more than the exception (which host, file or check) call `alert()` and raise
a failure marked as alerted; `alert_on_failure`, the DAG's failure callback, speaks for every
other failure. Both build the payload with `tfship.alerts.build_alert` and send it with `send_alert`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tfship.alerts import build_alert, publish_failure_alert
from tfship.config import ALERT_WEBHOOK_CONN_ID
from tfship.release.serving_dir import ModelVersion

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


def task_label(context: Mapping[str, Any]) -> str | None:
    """`dag.task[map index] try N` of the context's task instance."""
    ti = context.get("ti")
    if ti is None:
        return None
    map_index = getattr(ti, "map_index", -1)
    suffix = f"[{map_index}]" if map_index is not None and map_index >= 0 else ""
    return f"{ti.dag_id}.{ti.task_id}{suffix} try {ti.try_number}"


def alert(
    context: Mapping[str, Any],
    payload: Mapping[str, Any],
    *,
    conn_id: str = ALERT_WEBHOOK_CONN_ID,
    error: BaseException | None = None,
) -> bool:
    """Send a payload; mark `error` as alerted once it went out. A broken webhook is logged, never raised."""
    try:
        send_alert(payload, http_conn_id=conn_id)
    except Exception:  # the task fails anyway; losing the alert must not hide why
        log.exception("could not send the alert through connection %s", conn_id)
        return False
    if error is not None:
        mark_alerted(error)
    return True


def serving_alert(
    context: Mapping[str, Any], *, title: str, model: str, host: str, version: int, check: str, detail: str
) -> dict[str, Any]:
    """The payload for a serving failure on one host; D is read from the version number."""
    ti = context.get("ti")
    day = ModelVersion.parse(version)
    return build_alert(
        title=title,
        model=model,
        day=day.day.isoformat() if day is not None and day.day is not None else None,
        host=host,
        endpoint=None,
        file=f"version {version}",
        check=check,
        detail=detail,
        log_url=getattr(ti, "log_url", None),
        task=task_label(context),
    )


def alert_for_failure(context: Mapping[str, Any]) -> dict[str, Any]:
    """The alert payload for a failed task, from its context (exception, ti, task fields)."""
    log_url = getattr(context.get("ti"), "log_url", None)
    error = context.get("exception")
    if error is not None and hasattr(error, "check"):
        return publish_failure_alert(error, log_url=log_url, task=task_label(context))
    task = context.get("task")
    day = getattr(task, "day", None)
    if day is None and getattr(task, "version", None) is not None:
        version = ModelVersion.parse(task.version)  # deploy and canary know their version, which encodes D
        day = version.day.isoformat() if version is not None and version.day is not None else None
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
        task=task_label(context),
    )


def alert_on_failure(context: Mapping[str, Any]) -> None:
    """`on_failure_callback`: send the alert unless the task already sent a specific one."""
    if getattr(context.get("exception"), _ALERTED, False):
        log.info("the task already sent its own alert for this failure")
        return
    alert(context, alert_for_failure(context))
