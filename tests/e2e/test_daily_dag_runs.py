"""`airflow dags test` of the daily DAG against generated partitions on file://."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tfship.data.sampledata import write_day
from tfship.data.stats import read_stats
from tfship.storage import LocalStorage

pytestmark = pytest.mark.airflow


# Small enough for CI, large enough to learn: one CV configuration, few epochs.
FAST = {
    "cv_grid": [{"learning_rate": 0.003, "filters": 16, "dropout": 0.25}],
    "cv_folds": 2,
    "cv_epochs": 1,
    "epochs": 4,
    "accuracy_floor": 0.5,
}


def _dags_test(
    storage_root: str, conf: dict, extra_env: dict | None = None, local_root: Path | None = None
) -> subprocess.CompletedProcess:
    serving = str(local_root) if local_root else storage_root.removeprefix("file://")
    env = dict(
        os.environ,
        TFSHIP_STORAGE_ROOT=storage_root,
        TFSHIP_SERVING_DIR=f"local={serving}/serving/mnist",
        TFSHIP_LOCAL_WORK_DIR=f"{serving}/work",
        **(extra_env or {}),
    )
    return subprocess.run(
        ["airflow", "dags", "test", "tfship_daily", "-c", json.dumps(conf)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def _assert_preprocessed(storage, day: dt.date, summary) -> None:
    stats = read_stats(storage, "mnist", day)
    assert stats["rows_read"] == summary.rows
    assert sum(stats["rows_written"].values()) == summary.valid_rows
    assert stats["quarantined_total"] == sum(summary.malformed.values())
    assert {s["split"] for s in stats["shards"]} == {"train", "eval"}


def _log_lines(serving: Path) -> list[dict]:
    return [json.loads(line) for line in (serving / "releases.jsonl").read_text().splitlines()]


def _releases(serving: Path) -> list[dict]:
    return [line for line in _log_lines(serving) if "event" not in line]


def _canaries(serving: Path) -> list[dict]:
    return [line for line in _log_lines(serving) if line.get("event") == "canary"]


def test_full_run_publishes_and_a_rerun_is_a_no_op(tmp_path: Path):
    storage = LocalStorage(f"file://{tmp_path}")
    day = dt.date(2026, 11, 20)
    summary = write_day(storage, day, rows=3000, shards=2, bad_fraction=0.02)
    done = _dags_test(storage.root_uri, {"day": "2026-11-20", **FAST})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"{tmp_path}/raw/mnist/dt=2026-11-20/_SUCCESS is there" in output
    for task_id in ("preprocess", "validate_features", "cross_validate", "choose_config", "train", "evaluate"):
        assert f"[DAG TEST] end task task_id={task_id}" in output
    _assert_preprocessed(storage, day, summary)
    assert "evaluation gate: PUBLISH" in output
    # The first day has no history to drift from; the candidate passed infra validation before publication.
    assert "drift check of mnist for 2026-11-20: NO HISTORY (action hold)" in output
    assert "first day with no history" in output
    assert "infra validation of models/mnist/candidates/2026-11-20-" in output

    serving = tmp_path / "serving" / "mnist"
    [release] = _releases(serving)
    assert release["version"] == 2026112000
    version_dir = serving / "2026112000"
    assert {"saved_model.pb", "variables", "canary.json", "metrics.json", "cv_results.json"} <= {
        p.name for p in version_dir.iterdir()
    }
    candidates = storage.list("models/mnist/candidates")
    assert candidates == [f"2026-11-20-{release['digest'][:8]}"]
    with storage.open_read(f"models/mnist/infra_validation/{candidates[0]}.json") as handle:
        infra = json.loads(handle.read())
    assert infra["passed"] is True and infra["version"] == 2026112000 and infra["digest"] == release["digest"]
    # Deployed and checked: the container serves the new version and the canary passed on it.
    [canary] = _canaries(serving)
    assert (canary["version"], canary["passed"], canary["rows"]) == (2026112000, True, 256)
    with urllib.request.urlopen("http://127.0.0.1:8501/v1/models/mnist/versions/2026112000") as answer:
        assert json.loads(answer.read())["model_version_status"][0]["state"] == "AVAILABLE"

    again = _dags_test(storage.root_uri, {"day": "2026-11-20", **FAST})
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "already published as version 2026112000" in again.stdout + again.stderr
    # The same candidate passed infra validation in the first run: the recorded pass stands, no container.
    assert "already passed in run" in again.stdout + again.stderr
    assert "no container started" in again.stdout + again.stderr
    assert [r["version"] for r in _releases(serving)] == [2026112000]
    assert sorted(p.name for p in serving.iterdir() if p.name.isdigit()) == ["2026112000"]

    # A worse model than the one served is held back: publication is skipped, not failed.
    write_day(storage, day - dt.timedelta(days=1), rows=600, shards=1, bad_fraction=0.0)
    held = _dags_test(storage.root_uri, {"day": "2026-11-19", **FAST, "epochs": 1, "accuracy_floor": 0.999})
    output = held.stdout + held.stderr
    assert held.returncode == 0, output[-4000:]
    assert "evaluation gate: HOLD" in output
    assert "[DAG TEST] end task task_id=publish_model" not in output
    assert [r["version"] for r in _releases(serving)] == [2026112000]


def test_too_much_quarantine_fails_validation(tmp_path: Path):
    storage = LocalStorage(f"file://{tmp_path}")
    write_day(storage, dt.date(2026, 11, 21), rows=200, shards=1, bad_fraction=0.2)
    done = _dags_test(storage.root_uri, {"day": "2026-11-21", "max_quarantine_share": 0.1, **FAST})
    assert done.returncode != 0
    assert "40 of 200 rows (20.0%) of mnist for 2026-11-21 were quarantined" in done.stdout + done.stderr


@pytest.mark.hdfs
@pytest.mark.yarn
def test_run_on_yarn_trains_on_two_workers_and_publishes_from_hdfs(yarn_cluster, tmp_path: Path):
    """spark_default pointed at YARN and `train_workers` 2: nothing else of the DAG changes."""
    from tfship.release.manifest import read_manifest
    from tfship.storage import WebHdfsStorage

    storage = WebHdfsStorage(f"{yarn_cluster.rpc_uri}/e2e", [yarn_cluster.webhdfs_url], user="root")
    storage.delete("", recursive=True)
    summary = write_day(storage, dt.date(2026, 11, 22), rows=1500, shards=2, bad_fraction=0.02)
    known = {app["id"] for app in yarn_cluster.apps()}
    spark_env = yarn_cluster.spark_env()
    on_yarn = {
        **{k: spark_env[k] for k in ("HADOOP_CONF_DIR", "YARN_CONF_DIR", "SPARK_LOCAL_IP", "PYSPARK_PYTHON")},
        "SPARK_CONF_DIR": str(yarn_cluster.write_spark_defaults(tmp_path / "spark-conf")),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"}}
        ),
        "TFSHIP_WEBHDFS_ENDPOINTS": yarn_cluster.webhdfs_url,
        "TFSHIP_HDFS_USER": "root",
    }
    done = _dags_test(storage.root_uri, {"day": "2026-11-22", **FAST, "train_workers": 2}, on_yarn, local_root=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    _assert_preprocessed(storage, dt.date(2026, 11, 22), summary)
    assert any(name.startswith("tfship-") for name in storage.list("work/lib"))
    # Both Spark jobs ran on the ResourceManager: preprocessing, then training's barrier stage.
    apps = sorted((a for a in yarn_cluster.apps() if a["id"] not in known), key=lambda a: a["id"])
    assert [a["name"].split("-manual__")[0] for a in apps] == ["tfship-preprocess", "tfship-train"], apps
    assert {(a["state"], a["finalStatus"]) for a in apps} == {("FINISHED", "SUCCEEDED")}, apps
    from tests.integration.test_yarn_training import workers_in_containers

    workers = workers_in_containers(yarn_cluster, apps[1]["id"])
    assert sorted(workers) == [0, 1] and workers[0].isdisjoint(workers[1]), workers
    [candidate] = storage.list("models/mnist/candidates")
    with storage.open_read(f"models/mnist/candidates/{candidate}/metrics.json") as handle:
        assert json.loads(handle.read())["strategy"]["workers"] == 2
    on_hdfs = read_manifest(storage, f"models/mnist/candidates/{candidate}")
    [release] = _releases(tmp_path / "serving" / "mnist")
    assert (release["version"], release["digest"]) == (2026112200, on_hdfs.digest)
    served = json.loads((tmp_path / "serving" / "mnist" / "2026112200" / "MANIFEST.json").read_text())
    assert served["digest"] == on_hdfs.digest


def test_an_incomplete_partition_times_out_naming_the_path(tmp_path: Path):
    # Files landed but the producer never wrote _SUCCESS: the sensor waits, then names the marker.
    partial = tmp_path / "raw" / "mnist" / "dt=2026-10-01"
    partial.mkdir(parents=True)
    (partial / "part-00000.jsonl.gz").write_bytes(b"")
    done = _dags_test(
        f"file://{tmp_path}",
        {"day": "2026-10-01"},
        {"TFSHIP_RAW_WAIT_TIMEOUT_S": "3", "TFSHIP_RAW_POKE_INTERVAL_S": "1"},
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"file://{tmp_path}/raw/mnist/dt=2026-10-01/_SUCCESS did not appear within 3s" in output
    # The report still runs, at once (not after retries on the XComs nobody pushed), and records the stop.
    assert "[DAG TEST] end task task_id=report_release" in output
    assert "Task failed with exception" not in output.split("starting task_id=report_release")[-1]
    [record_file] = (tmp_path / "releases" / "mnist" / "2026-10-01").glob("*.json")
    record = json.loads(record_file.read_text())
    assert (record["day"], record["status"], record["version"]) == ("2026-10-01", "failed", None), record
    assert record["summary"] == "no training result: train failed or did not run", record


def test_a_manual_day_without_data_is_refused_before_any_work(tmp_path: Path):
    done = _dags_test(f"file://{tmp_path}", {"day": "2026-10-02"})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"day 2026-10-02 has no raw data: file://{tmp_path}/raw/mnist/dt=2026-10-02 does not exist" in output
    assert "[DAG TEST] end task task_id=wait_for_raw" not in output


def test_a_day_param_that_is_not_a_date_is_refused(tmp_path: Path):
    done = _dags_test(f"file://{tmp_path}", {"day": "yesterday"})
    assert done.returncode != 0
    assert "yesterday" in done.stdout + done.stderr
