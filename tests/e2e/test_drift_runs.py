"""The daily DAG on a drifted day (`airflow dags test`): stopped, or held and then let through by on-call.

Three normal days are preprocessed first, then D is generated with class 3 missing. With the
action `fail` the run stops at check_drift; with `hold` it trains and evaluates but publishes
nothing. Then on-call raises the limit where scheduled runs take it from (TFSHIP_PARAM_DEFAULTS,
read by every task's parse) and clears check_drift with its downstream tasks, as the UI's Clear
does; the same run goes on (tests/e2e/resume_run.py stands in for the scheduler) and releases.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.webhook import WebhookReceiver
from tests.e2e.test_daily_dag_runs import FAST
from tfship.data.datasets import dataset_spec
from tfship.data.preprocess import preprocess_day
from tfship.data.sampledata import Distortion, write_day
from tfship.paths import release_record_path
from tfship.storage import LocalStorage

pytestmark = [pytest.mark.airflow, pytest.mark.spark, pytest.mark.docker]
D = dt.date(2026, 11, 14)
HISTORY = [D - dt.timedelta(days=n) for n in (3, 2, 1)]
VERSION = 2026111400


def _env(root: Path, webhook: WebhookReceiver, param_defaults: dict) -> dict[str, str]:
    return dict(
        os.environ,
        TFSHIP_STORAGE_ROOT=f"file://{root}",
        TFSHIP_SERVING_DIR=f"local={root}/serving/mnist",
        TFSHIP_LOCAL_WORK_DIR=f"{root}/work",
        TFSHIP_PARAM_DEFAULTS=json.dumps(param_defaults),
        AIRFLOW_CONN_TFSHIP_ALERT_WEBHOOK=webhook.connection_json(),
    )


def _run(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    return done.returncode, done.stdout + done.stderr


def _run_id(output: str) -> str:
    """The id of the run a `dags test` made, from its summary line."""
    found = re.findall(r"DagRun Finished: dag_id=tfship_daily, logical_date=[^,]+, run_id=([^,]+),", output)
    assert found, output[-3000:]
    return found[-1]


def _record(storage: LocalStorage, run_id: str) -> dict:
    with storage.open_read(release_record_path("mnist", D.isoformat(), run_id)) as handle:
        return json.loads(handle.read())


def _serving_container(docker_api) -> tuple[str, str] | None:
    found = docker_api.containers(all=True, filters={"name": "^/tfserving-mnist$"})
    return (found[0]["Id"], found[0]["State"]) if found else None


def test_drift_stops_or_holds_the_release_and_a_raised_limit_and_a_clear_let_it_go_on(
    tmp_path: Path, spark, docker_base_url: str
) -> None:
    import docker

    docker_api = docker.APIClient(base_url=docker_base_url, version="auto")
    storage = LocalStorage(f"file://{tmp_path}")
    for day in HISTORY:
        write_day(storage, day, rows=1500, shards=2, bad_fraction=0.0)
        preprocess_day(spark, storage, spec=dataset_spec("mnist"), day=day)
    write_day(storage, D, rows=3000, shards=2, bad_fraction=0.02, distortion=Distortion(missing_class=3))
    serving = tmp_path / "serving" / "mnist"
    conf = json.dumps({"day": D.isoformat(), **FAST})
    dags_test = ["airflow", "dags", "test", "tfship_daily", "-c"]
    with WebhookReceiver() as webhook:
        site_defaults = {"drift_max_label_linf": 0.05}
        env = _env(tmp_path, webhook, site_defaults)

        # 1. The run's own conf says fail: nothing after check_drift runs; the record says why.
        fail_conf = json.dumps({"day": D.isoformat(), **FAST, "drift_action": "fail"})
        code, output = _run([*dags_test, fail_conf], env)
        assert code != 0, output[-3000:]
        assert "drift check of mnist for 2026-11-14: DRIFTED (action fail)" in output
        assert "[DAG TEST] end task task_id=cross_validate" not in output
        stopped = _record(storage, _run_id(output))
        assert stopped["status"] == "failed" and stopped["summary"].startswith("stopped by the drift check: drift")
        assert stopped["drift"]["moved"] == ["label"] and stopped["drift"]["labels"]["worst_label"] == "3"
        [first_alert] = webhook.wait_for(1)
        assert "data drift, run stopped" in first_alert["text"] and "drift: label" in first_alert["text"]

        # 2. The default action holds: trained and evaluated, nothing published, serving untouched, alerted.
        container_before = _serving_container(docker_api)
        code, output = _run([*dags_test, conf], env)
        assert code == 0, output[-3000:]
        assert "DRIFTED (action hold)" in output and "evaluation gate: HOLD: held by the drift check" in output
        for task_id in ("infra_validate", "publish_model", "release_host"):
            assert f"[DAG TEST] end task task_id={task_id}" not in output, task_id
        assert not serving.exists()
        assert _serving_container(docker_api) == container_before
        run_id = _run_id(output)
        held = _record(storage, run_id)
        assert held["status"] == "held" and held["summary"].startswith("held by the drift check: drift against 3")
        assert "label share L-inf" in held["summary"] and "label 3:" in held["summary"]
        assert held["candidate"]["path"].startswith("models/mnist/candidates/2026-11-14-")
        assert held["infra_validation"] is None and held["hosts"][0]["status"] == "skipped"
        alerts = webhook.wait_for(2)
        assert "data drift, publication held" in alerts[1]["text"] and "2026-11-14" in alerts[1]["text"]

        # 3. On-call raises the limit for scheduled runs and clears check_drift with what follows (the UI's Clear).
        raised = _env(tmp_path, webhook, {"drift_max_label_linf": 0.2})
        resume = [sys.executable, str(Path(__file__).with_name("resume_run.py")), "tfship_daily", run_id, "check_drift"]
        code, output = _run(resume, raised)
        assert code == 0, output[-4000:]
        assert "CLEARED " in output and "infra_validate" in output.split("CLEARED ", 1)[1].split("\n", 1)[0]
        assert f"RESUMED run_id={run_id} state=success" in output
        assert "drift check of mnist for 2026-11-14: PASSED" in output and "evaluation gate: PUBLISH" in output
        released = _record(storage, run_id)
        assert released["status"] == "released" and released["version"] == VERSION
        assert released["drift"]["passed"] is True and released["drift"]["labels"]["limit"] == 0.2
        assert released["infra_validation"]["passed"] is True
        assert released["candidate"]["digest"] == held["candidate"]["digest"]  # the same candidate went out
        lines = [json.loads(line) for line in (serving / "releases.jsonl").read_text().splitlines()]
        assert [line["version"] for line in lines if "event" not in line] == [VERSION]
        assert len(webhook.received) == 2  # nothing more to say
