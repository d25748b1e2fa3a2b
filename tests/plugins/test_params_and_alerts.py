from __future__ import annotations

import datetime as dt

import pytest
from airflow.sdk import Param

from tfship.data.sampledata import write_day
from tfship.errors import ConfigError

PARAMS = {
    "epochs": Param(8, type="integer", minimum=1, title="Training epochs"),
    "force_publish": Param(False, type="boolean"),
    "day": Param(None, type=["null", "string"], format="date"),
}


def site_defaults(env: dict[str, str]) -> dict:
    """TFSHIP_PARAM_DEFAULTS as the DAG receives it: parsed by Settings."""
    from tfship.config import Settings

    return Settings.from_env(env).param_defaults


def test_site_defaults_replace_param_defaults_and_keep_the_schema():
    from tfship_airflow.params import with_site_defaults

    merged = with_site_defaults(PARAMS, site_defaults({"TFSHIP_PARAM_DEFAULTS": '{"epochs": 2}'}))
    assert merged["epochs"].value == 2
    assert merged["epochs"].schema == {"type": "integer", "minimum": 1, "title": "Training epochs"}
    assert merged["force_publish"] is PARAMS["force_publish"]
    assert with_site_defaults(PARAMS, site_defaults({})) == PARAMS


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"epochz": 2}', r"names no such Param: \['epochz'\]"),
        ('{"epochs": 0}', "epochs=0 is refused by its schema"),
        ('{"force_publish": true}', r"may not set \['force_publish'\]"),
        ('{"day": "2026-01-01", "epochs": 2}', r"may not set \['day'\]"),
        ("[1, 2]", "must be a JSON object"),
        ("{epochs: 2}", "is not JSON"),
    ],
)
def test_bad_site_defaults_stop_the_parse_with_the_name(value, message):
    from tfship_airflow.params import with_site_defaults

    with pytest.raises(ConfigError, match=message):
        with_site_defaults(PARAMS, site_defaults({"TFSHIP_PARAM_DEFAULTS": value}))


def test_a_manual_day_without_raw_data_is_refused_with_its_path(local_storage):
    from tfship.config import Settings
    from tfship_airflow.runtime import check_run_inputs as check_inputs

    settings = Settings.from_env({"TFSHIP_STORAGE_ROOT": local_storage.root_uri})

    def check_run_inputs(context):
        return check_inputs(settings, context).day

    with pytest.raises(FileNotFoundError, match=r"day 2026-04-02 has no raw data: .*/raw/mnist/dt=2026-04-02 does"):
        check_run_inputs({"params": {"day": "2026-04-02", "raw_root": "raw"}})
    write_day(local_storage, dt.date(2026, 4, 2), rows=20, shards=1)
    assert check_run_inputs({"params": {"day": "2026-04-02", "raw_root": "raw"}}) == dt.date(2026, 4, 2)
    with pytest.raises(ConfigError, match=r"raw_root: path '\.\./raw' escapes the storage root"):
        check_run_inputs({"params": {"day": "2026-04-02", "raw_root": "../raw"}})
    # A scheduled run waits for its partition instead (the sensor), so no data yet is fine here.
    import pendulum

    start = pendulum.datetime(2026, 4, 9, tz="UTC")
    assert check_run_inputs({"params": {"day": None, "raw_root": "raw"}, "data_interval_start": start}) == dt.date(
        2026, 4, 9
    )


def test_the_failure_callback_stays_silent_when_the_task_already_alerted(monkeypatch):
    from tfship_airflow import alerts

    sent = []
    monkeypatch.setattr(alerts, "send_alert", lambda payload, **_: sent.append(payload))
    alerts.alert_on_failure({"exception": alerts.mark_alerted(RuntimeError("canary failed"))})
    assert sent == []
    alerts.alert_on_failure({"exception": RuntimeError("killed")})
    [payload] = sent
    assert "killed" in str(payload)


def test_a_serving_task_alert_names_the_day_its_version_encodes():
    from types import SimpleNamespace

    from tfship_airflow.alerts import alert_for_failure

    task = SimpleNamespace(model="mnist", host="local", version="2026112600", candidate=None)
    payload = alert_for_failure({"task": task, "exception": RuntimeError("nothing answers")})
    assert "D=2026-11-26" in payload["text"] and "host local" in payload["text"]


def test_deploy_and_canary_skip_a_version_a_higher_one_overtook(tmp_path):
    from airflow.sdk.exceptions import AirflowSkipException

    from tfship_airflow.serving import skip_if_superseded

    pushed = {}

    class FakeTi:
        def xcom_push(self, key, value):
            pushed[key] = value

    for name in ("2026112000", "2026112600", ".rejected", "2026112700-not-a-version"):
        (tmp_path / name).mkdir()
    skip_if_superseded("local", str(tmp_path), 2026112600, "deploy_serving", {"ti": FakeTi()})  # the newest: goes on
    assert pushed == {}
    with pytest.raises(AirflowSkipException, match="version 2026112000 is superseded by version 2026112600"):
        skip_if_superseded("local", str(tmp_path), 2026112000, "canary_serving", {"ti": FakeTi()})
    assert "superseded by version 2026112600" in pushed["superseded"]["reason"]
    assert pushed["superseded"]["host"] == "local"
