"""The drift check as Airflow runs it: the policy from Params, the report as XCom, an alert when the day drifted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import AirflowFailException

from tfship.alerts import build_alert
from tfship.config import Settings
from tfship.days import parse_day
from tfship.errors import TfshipError
from tfship.paths import features_dir
from tfship_airflow.alerts import alert, task_label


def drift_policy(params: Mapping[str, Any]) -> Any:
    """The `drift_*` Params as a DriftPolicy."""
    from tfship.data.drift import DriftPolicy

    return DriftPolicy(
        window_days=int(params["drift_window_days"]),
        max_js=float(params["drift_max_js"]),
        max_label_linf=float(params["drift_max_label_linf"]),
        action=params["drift_action"],
    )


def check_day_drift(
    settings: Settings, day: str, params: Mapping[str, Any], context: Mapping[str, Any]
) -> dict[str, Any]:
    """D against the trailing window; return the report. Drifted: alert, then hold (the gate reads it) or fail."""
    from tfship.data.drift import check_drift

    storage = settings.storage.open()
    try:
        report = check_drift(storage, settings.dataset, parse_day(day), drift_policy(params))
    except (TfshipError, ValueError) as err:  # missing statistics or a Param the policy refuses
        raise AirflowFailException(f"drift check of {day}: {err}") from err
    print(report.render(), flush=True)
    data = report.to_dict()
    if report.passed:
        return data
    ti = context["ti"]
    failure = AirflowFailException(f"drift check of {settings.dataset} for {day} failed the run: {report.summary}")
    title = "tfship: data drift, run stopped" if report.fails else "tfship: data drift, publication held"
    payload = build_alert(
        title=title,
        model=settings.model,
        day=day,
        host=None,
        endpoint=None,
        file=storage.uri(features_dir(settings.dataset, parse_day(day))),
        check="drift: " + ", ".join(report.moved),
        detail=report.render(),
        log_url=getattr(ti, "log_url", None),
        task=task_label(context),
    )
    alert(context, payload, error=failure)
    if report.fails:
        # A failed task hands on no return value: push the report first, so the release record says why.
        ti.xcom_push(key=BaseXCom.XCOM_RETURN_KEY, value=data)
        raise failure
    return data
