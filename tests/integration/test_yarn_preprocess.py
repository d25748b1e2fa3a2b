"""The preprocessing job on a real YARN writes the very bytes it writes on local[2].

One raw day on the loopback cluster's HDFS; include/jobs/preprocess.py submitted twice over that
same storage root with the library zip as --py-files and the project's jar as --jars:
`--master local[2]`, then YARN client mode with two executors. Both read the raw files and write
the outputs through Spark's own Hadoop client (hdfs://, the NamedFileOutputFormat). Every output
file is read back over plain WebHDFS after each run; the YARN run is identified on the
ResourceManager (REST) and its executors in the NodeManager's logs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_yarn import rm_app, rm_apps, webhdfs
from tests.notes import say

pytestmark = [pytest.mark.spark, pytest.mark.hdfs, pytest.mark.yarn]
JOB = Path(__file__).resolve().parents[2] / "include" / "jobs" / "preprocess.py"
D = dt.date(2026, 11, 27)
ROWS = 3000
BASE = "/tests/yarn-preprocess"
OUTPUTS = (f"features/mnist/dt={D.isoformat()}", f"quarantine/mnist/dt={D.isoformat()}")
APP_NAME = "tfship-test-yarn-preprocess"
GUARD_S = 600  # a hung job only; each run takes well under a minute


def hdfs_files(cluster, directory: str) -> dict[str, bytes]:
    """Relative path -> bytes of every file below an HDFS directory (LISTSTATUS + OPEN, recursively)."""
    listing = json.loads(webhdfs(cluster, directory, "LISTSTATUS"))["FileStatuses"]["FileStatus"]
    files: dict[str, bytes] = {}
    for status in listing:
        name = status["pathSuffix"]
        if status["type"] == "DIRECTORY":
            files |= {f"{name}/{k}": v for k, v in hdfs_files(cluster, f"{directory}/{name}").items()}
        else:
            files[name] = webhdfs(cluster, f"{directory}/{name}", "OPEN")
    return files


def outputs(cluster) -> dict[str, bytes]:
    """Every file of the day's features and quarantine partitions, keyed by root-relative path."""
    return {f"{d}/{k}": v for d in OUTPUTS for k, v in hdfs_files(cluster, f"{BASE}/{d}").items()}


def run_job(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=GUARD_S)
    seconds = time.monotonic() - started
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    return log, seconds


def executor_containers(cluster, app_id: str) -> dict[str, int]:
    """Container -> tasks its executor finished, from the NodeManager's log dirs (AM container left out)."""
    finished = {}
    for container, text in cluster.container_logs(app_id).items():
        if not container.endswith("_000001"):  # the ApplicationMaster (ExecutorLauncher)
            finished[container] = len(re.findall(r"Executor: Finished task", text))
    return finished


def test_preprocess_on_yarn_writes_the_same_bytes_as_local(yarn_cluster):
    from tfship.data.sampledata import write_day
    from tfship.jvm import build_hadoop_jar
    from tfship.packaging import publish_library_zip
    from tfship.storage import WebHdfsStorage

    storage = WebHdfsStorage(
        f"{yarn_cluster.rpc_uri}{BASE}", [yarn_cluster.webhdfs_url], user=os.environ.get("USER", "root")
    )
    storage.delete("", recursive=True)
    raw = write_day(storage, D, rows=ROWS, shards=4, bad_fraction=0.02)
    library = publish_library_zip(storage)
    jar = str(build_hadoop_jar())
    args = [
        "--day", D.isoformat(), "--dataset", "mnist", "--storage-root", storage.root_uri,
        "--webhdfs-endpoints", yarn_cluster.webhdfs_url, "--hdfs-user", "root",
    ]  # fmt: skip
    # No PYTHONPATH: driver and executors import tfship and jobs from the zip alone.
    env = {k: v for k, v in yarn_cluster.spark_env().items() if k != "PYTHONPATH"}
    env["SPARK_LOCAL_IP"] = "127.0.0.1"

    local_command = [
        shutil.which("spark-submit") or "spark-submit", "--master", "local[2]",
        "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
        "--conf", "spark.ui.showConsoleProgress=false", "--py-files", library, "--jars", jar, str(JOB), *args,
    ]  # fmt: skip
    local_log, local_s = run_job(local_command, env)
    local_files = outputs(yarn_cluster)
    for directory in OUTPUTS:  # what the YARN run leaves is its own, not the first run's
        storage.delete(directory, recursive=True)

    known = {app["id"] for app in rm_apps(yarn_cluster)}
    yarn_command = yarn_cluster.submit_command(JOB, *args, deploy_mode="client", conf={"spark.ui.enabled": "false"})
    # The job keeps spark-submit's --name.
    yarn_command[1:1] = ["--py-files", library, "--jars", jar, "--name", APP_NAME]
    yarn_log, yarn_s = run_job(yarn_command, env)
    yarn_files = outputs(yarn_cluster)

    # The same job: the stats line each driver printed, and what the generator wrote.
    stats_lines = [re.findall(r"^TFSHIP_STATS (.*)$", log, re.MULTILINE) for log in (local_log, yarn_log)]
    assert stats_lines[0] == stats_lines[1] and len(stats_lines[0]) == 1, stats_lines
    printed = json.loads(stats_lines[0][0])
    assert printed["rows_read"] == ROWS and sum(printed["quarantined"].values()) == sum(raw.malformed.values())

    # Byte-identical outputs: the same names, the same bytes.
    assert sorted(yarn_files) == sorted(local_files)
    differing = sorted(name for name in local_files if local_files[name] != yarn_files[name])
    assert differing == [], differing
    names = set(local_files)
    features, quarantine = OUTPUTS
    assert {f"{features}/_stats.json", f"{features}/_SUCCESS", f"{quarantine}/_SUCCESS"} <= names, sorted(names)
    assert any(n.startswith(f"{quarantine}/part-") for n in names), sorted(names)
    assert not [n for n in names if "/." in n or n.startswith(".")], "temporary files left behind"
    # _stats.json lists every shard with the md5 of exactly the bytes on HDFS.
    stats = json.loads(local_files[f"{features}/_stats.json"])
    shards = {f"{features}/{s['path']}": s["md5"] for s in stats["shards"]}
    assert sorted(shards) == sorted(n for n in names if n.endswith(".tfrecord.gz")), (sorted(shards), sorted(names))
    assert all(hashlib.md5(local_files[n]).hexdigest() == md5 for n, md5 in shards.items())

    # The second run really ran on YARN: one new application, finished and succeeded, whose two
    # executors (two containers besides the ApplicationMaster's) both ran tasks.
    new = [app for app in rm_apps(yarn_cluster) if app["id"] not in known]
    assert len(new) == 1, new
    app = rm_app(yarn_cluster, new[0]["id"])
    assert (app["state"], app["finalStatus"]) == ("FINISHED", "SUCCEEDED"), app
    assert app["name"] == APP_NAME, app["name"]
    assert f"Submitted application {app['id']}" in yarn_log, yarn_log[-3000:]
    executors = executor_containers(yarn_cluster, app["id"])
    assert len(executors) == 2 and all(executors.values()), executors

    say(
        f"preprocess {ROWS} rows on HDFS: local[2] {local_s:.1f}s ({ROWS / local_s:,.0f} rows/s), "
        f"YARN 2 executors {yarn_s:.1f}s ({ROWS / yarn_s:,.0f} rows/s, {app['elapsedTime'] / 1000:.1f}s in YARN); "
        f"{len(local_files)} files byte-identical; tasks per executor {sorted(executors.values())}"
    )


def daily_dag_task(task_id: str):
    """A task of the daily DAG, from its file (no DagBag: nothing touches Airflow's database)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "tfship_daily_under_test", JOB.parents[2] / "dags" / "tfship_daily.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag.get_task(task_id)


def test_the_dags_preprocess_in_cluster_mode_is_followed_through_the_resourcemanager(yarn_cluster, tmp_path):
    """Cluster deploy mode as the README sets it up: the driver in the ApplicationMaster, spark-submit
    returning at once (`yarn_track_via_rm_api`), the operator polling the ResourceManager's REST API."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from tfship.data.sampledata import write_day
    from tfship.packaging import publish_library_zip
    from tfship.storage import WebHdfsStorage

    dag_task = daily_dag_task("preprocess")
    storage = WebHdfsStorage(
        f"{yarn_cluster.rpc_uri}{BASE}-cluster", [yarn_cluster.webhdfs_url], user=os.environ.get("USER", "root")
    )
    storage.delete("", recursive=True)
    raw = write_day(storage, D, rows=1000, shards=2, bad_fraction=0.02)
    env = {k: v for k, v in yarn_cluster.spark_env().items() if k != "PYTHONPATH"}
    env["SPARK_CONF_DIR"] = str(yarn_cluster.write_spark_defaults(tmp_path / "spark-conf"))
    env["AIRFLOW_CONN_SPARK_YARN_CLUSTER"] = json.dumps(
        {
            "conn_type": "spark",
            "host": "yarn",
            "extra": {
                "deploy-mode": "cluster",
                "spark-binary": "spark-submit",
                "yarn_resourcemanager_webapp_address": yarn_cluster.rm_webapp_url,
            },
        }
    )
    preprocess = SparkSubmitOperator(
        task_id="preprocess",
        conn_id="spark_yarn_cluster",
        application=dag_task.application,
        jars=dag_task.jars,  # the DAG's own --jars
        py_files=publish_library_zip(storage),
        conf=dag_task.conf,
        name=f"{APP_NAME}-cluster",
        application_args=[
            f"--day={D.isoformat()}",
            "--dataset=mnist",
            f"--storage-root={storage.root_uri}",
            f"--webhdfs-endpoints={yarn_cluster.webhdfs_url}",
            "--hdfs-user=root",
        ],
        yarn_track_via_rm_api=True,
        status_poll_interval=1,  # the provider polls every 10 s at least
    )
    dag_task.pre_execute({})  # builds the jar, as on a worker that has not got it yet
    known = {app["id"] for app in rm_apps(yarn_cluster)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        preprocess.execute({})

    [app] = [a for a in rm_apps(yarn_cluster) if a["id"] not in known]
    assert (app["state"], app["finalStatus"], app["name"]) == ("FINISHED", "SUCCEEDED", f"{APP_NAME}-cluster"), app
    # The driver ran in the ApplicationMaster's container: its log holds the job's stats line.
    am_log = yarn_cluster.container_logs(app["id"], "stdout")
    [am] = [text for container, text in am_log.items() if container.endswith("_000001")]
    printed = json.loads(re.search(r"^TFSHIP_STATS (.*)$", am, re.MULTILINE).group(1))
    assert printed["rows_read"] == 1000 and sum(printed["quarantined"].values()) == sum(raw.malformed.values())
    features = f"features/mnist/dt={D.isoformat()}"
    assert storage.list(features) == ["_SUCCESS", "_stats.json", "eval", "train"]
