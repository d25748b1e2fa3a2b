"""The `train` task's code with `train_workers` > 1: a Spark barrier stage on a real YARN.

Each test calls the Airflow side (`tfship_airflow.training.run_training`) as the DAG's task does,
with `spark_default` pointing at the loopback YARN and the storage root on its HDFS. Expected
values come from the cluster (ResourceManager REST, container logs, HDFS), not from the job.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.cluster import descendants
from tests.features_support import write_features
from tests.integration.test_yarn import listeners
from tests.notes import say

pytestmark = [pytest.mark.spark, pytest.mark.hdfs, pytest.mark.yarn]
D = dt.date(2026, 11, 24)
ROWS = 3000  # 2400 train rows: 8 epochs of the default model reach ~0.87 on this synthetic data
FLOOR = 0.8
PARAMS = {"epochs": 8, "global_batch": 64, "replicas": 1}
LOOPBACK_HOSTS = {"127.0.0.1", "[::ffff:127.0.0.1]", "localhost"}


@pytest.fixture(scope="module")
def yarn_training(yarn_cluster, tmp_path_factory):
    """spark_default -> the loopback YARN (client mode), the storage root on its HDFS, D's features there."""
    from tfship.storage import WebHdfsStorage

    base = tmp_path_factory.mktemp("yarn-train")
    report = base / "cv"
    report.mkdir()
    (report / "cv_results.json").write_text("[]")
    (report / "cv_results.png").write_bytes(b"not a real plot")
    root = f"{yarn_cluster.rpc_uri}/tfship-train"
    storage = WebHdfsStorage(root, [yarn_cluster.webhdfs_url], user=os.environ.get("USER", "root"))
    write_features(storage, D, rows=ROWS)
    env = {
        **yarn_cluster.spark_env(),
        "SPARK_CONF_DIR": str(yarn_cluster.write_spark_defaults(base / "spark-conf")),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"}}
        ),
        "TFSHIP_STORAGE_ROOT": root,
        "TFSHIP_WEBHDFS_ENDPOINTS": yarn_cluster.webhdfs_url,
        "TFSHIP_LOCAL_WORK_DIR": str(base / "work"),  # every container of this YARN shares this disk
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield SimpleNamespace(cluster=yarn_cluster, storage=storage, report=report, work=base / "work")


def train(setup, run_id: str, **params):
    """run_training as the DAG's `train` task calls it; returns (candidate dict, seconds)."""
    from tfship.config import Settings
    from tfship_airflow.training import run_training

    choice = {"hparams": {}, "config_id": "default", "report_dir": str(setup.report)}
    context = {"dag_run": SimpleNamespace(dag_id="tfship_daily", run_id=run_id)}
    started = time.monotonic()
    result = run_training(Settings.from_env(), choice, D.isoformat(), {**PARAMS, **params}, context)
    return result, time.monotonic() - started


def metrics_of(setup, candidate: dict) -> dict:
    with setup.storage.open_read(f"{candidate['candidate']}/metrics.json") as handle:
        return json.loads(handle.read())


def signature_of(setup, candidate: dict, tmp_path: Path) -> dict:
    """The exported serving signature's inputs and outputs (names, dtypes, shapes)."""
    import tensorflow as tf

    local = tmp_path / candidate["digest"]
    download(setup.storage, candidate["candidate"], local)
    function = tf.saved_model.load(str(local)).signatures["serving_default"]
    inputs = {k: (v.dtype.name, v.shape.as_list()) for k, v in function.structured_input_signature[1].items()}
    outputs = {k: (v.dtype.name, v.shape.as_list()) for k, v in function.structured_outputs.items()}
    return {"inputs": inputs, "outputs": outputs}


def download(storage, path: str, local: Path) -> None:
    """Copy a storage directory to local disk, recursively."""
    local.mkdir(parents=True, exist_ok=True)
    for name in storage.list(path):
        source = f"{path}/{name}"
        if storage.is_dir(source):
            download(storage, source, local / name)
        else:
            with storage.open_read(source) as handle:
                (local / name).write_bytes(handle.read())


def new_app(setup, known: set[str]) -> dict:
    [app] = [a for a in setup.cluster.apps() if a["id"] not in known]
    return app


def workers_in_containers(cluster, app_id: str) -> dict[int, set[str]]:
    """Training worker index -> the YARN containers whose executor ran it (from the NodeManager's logs)."""
    ran: dict[int, set[str]] = {}
    for container, text in cluster.container_logs(app_id).items():
        for index in map(int, re.findall(r"\[worker (\d+) of \d+\]", text)):
            ran.setdefault(index, set()).add(container)
    return ran


@pytest.fixture(scope="module")
def two_worker_run(yarn_training):
    known = {a["id"] for a in yarn_training.cluster.apps()}
    result, seconds = train(yarn_training, "two-workers", train_workers=2)
    return result, seconds, new_app(yarn_training, known)


def test_two_workers_train_one_candidate_in_two_yarn_containers(yarn_training, two_worker_run, tmp_path):
    result, seconds, app = two_worker_run
    assert (app["state"], app["finalStatus"]) == ("FINISHED", "SUCCEEDED"), app
    assert app["name"] == "tfship-train-two-workers"
    ran = workers_in_containers(yarn_training.cluster, app["id"])
    assert sorted(ran) == [0, 1], ran
    assert ran[0].isdisjoint(ran[1]), f"both workers ran in one container: {ran}"
    metrics = metrics_of(yarn_training, result)
    assert metrics["strategy"] == {"kind": "multi_worker", "replicas": 2, "workers": 2}, metrics["strategy"]
    assert metrics["eval_accuracy"] == result["eval_accuracy"] >= FLOOR, metrics["eval_accuracy"]
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, PARAMS["epochs"] + 1))
    # Only worker 0 uploaded: one candidate of D.
    candidates = [n for n in yarn_training.storage.list("models/mnist/candidates") if n.startswith(D.isoformat())]
    assert candidates == [result["candidate"].rsplit("/", 1)[1]], candidates
    say(f"train_workers=2 on YARN: {seconds:.0f}s in all, eval accuracy {metrics['eval_accuracy']:.3f}")


def test_one_worker_trains_here_with_the_same_serving_signature(yarn_training, two_worker_run, tmp_path):
    cluster_result, _, _ = two_worker_run
    known = {a["id"] for a in yarn_training.cluster.apps()}
    local_result, seconds = train(yarn_training, "one-worker", train_workers=1)
    assert {a["id"] for a in yarn_training.cluster.apps()} == known, "train_workers=1 submitted to YARN"
    local_metrics = metrics_of(yarn_training, local_result)
    assert local_metrics["strategy"]["kind"] == "cpu_replicas" and local_metrics["strategy"]["workers"] == 1
    assert local_result["candidate"] != cluster_result["candidate"], "another training key, another candidate"
    assert local_metrics["eval_accuracy"] >= FLOOR
    assert signature_of(yarn_training, local_result, tmp_path) == signature_of(yarn_training, cluster_result, tmp_path)
    say(f"train_workers=1 (local process): {seconds:.0f}s, eval accuracy {local_metrics['eval_accuracy']:.3f}")


def environ_of(proc: Path) -> dict[bytes, bytes]:
    return dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)


def training_processes(work_dir: Path) -> dict[int, int]:
    """Worker index -> pid of each `python -m jobs.train` whose --work-dir is work_dir."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"jobs.train" not in argv or str(work_dir).encode() not in argv:
                continue
            environ = environ_of(proc)
        except OSError:
            continue
        config = json.loads(environ[b"TF_CONFIG"])
        found[config["task"]["index"]] = int(proc.name)
    return found


def tf_config_ports(pids: dict[int, int]) -> dict[int, int]:
    """Worker index -> the port its TF_CONFIG gives it (the host part is checked to be loopback)."""
    ports = {}
    for worker, pid in pids.items():
        environ = environ_of(Path(f"/proc/{pid}"))
        config = json.loads(environ[b"TF_CONFIG"])
        host, port = config["cluster"]["worker"][worker].rsplit(":", 1)
        assert host in LOOPBACK_HOSTS, config
        ports[worker] = int(port)
    return ports


def test_a_worker_killed_mid_epoch_fails_the_stage_and_the_retry_resumes(
    yarn_training, two_worker_run, tmp_path, capfd
):
    run_id = "killed-worker"
    work = yarn_training.work / "tfship_daily" / run_id / "train"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"], outcome["seconds"] = train(yarn_training, run_id, train_workers=2, epochs=10)
        except Exception as err:  # noqa: BLE001 - reported by the test thread
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    progress = work / "worker-1" / "progress.jsonl"
    deadline = time.monotonic() + 600  # a guard against a hung job only
    while not (progress.exists() and progress.read_text().count("\n") >= 2):
        assert thread.is_alive() and time.monotonic() < deadline, outcome or "the job never reached epoch 2"
        time.sleep(0.2)
    pids = training_processes(work)
    tf_ports = tf_config_ports(pids)
    outside = [
        (pid, address)
        for pid, address in listeners(set(descendants(yarn_training.cluster.process.pid)) | {os.getpid()})
        if address.rsplit(":", 1)[0] not in LOOPBACK_HOSTS
    ]
    epochs_before = progress.read_text().count("\n")
    os.kill(pids[1], signal.SIGKILL)
    thread.join(900)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    out = capfd.readouterr().out
    # Both workers started again from their checkpoints, and said from which epoch.
    resumed = sorted(set(re.findall(r"TFSHIP_RESUME worker (\d) on [^:]+: after epoch (\d+) of 10", out)))
    assert [w for w, _ in resumed] == ["0", "1"], out[-3000:]
    assert all(int(epoch) >= epochs_before for _, epoch in resumed), (resumed, epochs_before)
    history = [json.loads(line)["epoch"] for line in (work / "progress.jsonl").read_text().splitlines()]
    assert history.count(1) == 1, f"training started again from zero: {history}"
    assert sorted(set(history)) == list(range(1, 11)), history
    metrics = metrics_of(yarn_training, result)
    assert metrics["strategy"]["workers"] == 2 and metrics["eval_accuracy"] >= FLOOR
    assert signature_of(yarn_training, result, tmp_path) == signature_of(yarn_training, two_worker_run[0], tmp_path)
    assert not training_processes(work), "a training process outlived its job"
    # Spark (driver, executors, block managers) and YARN listen on loopback only. TensorFlow's
    # collective gRPC server listens on every interface whatever TF_CONFIG says (grpc_server_lib.cc
    # binds "0.0.0.0:<port>"): those, and only those, are the exception; peers dial 127.0.0.1.
    assert sorted(outside) == sorted((pids[w], f"*:{port}") for w, port in tf_ports.items()), (outside, tf_ports)
    say(f"killed worker 1 after epoch {epochs_before}: resumed {resumed}, {outcome['seconds']:.0f}s in all")


def test_more_workers_than_the_cluster_holds_fails_naming_the_slots(yarn_training, two_worker_run):
    from airflow.sdk.exceptions import AirflowException

    started = time.monotonic()
    with pytest.raises(AirflowException) as failure:
        train(yarn_training, "three-workers", train_workers=3)
    seconds = time.monotonic() - started
    # The NodeManager holds an AM and two 2048 MB training workers; a third never starts.
    assert "could not start 3 training workers at once" in str(failure.value)
    assert "Barrier stage in job 0 requires 3 slots, but only 2 are available" in str(failure.value)
    say(f"train_workers=3 on a 2-slot YARN: failed after {seconds:.0f}s naming the slots")


def test_a_worker_bigger_than_a_container_may_be_is_refused_with_yarns_reason(
    yarn_training, two_worker_run, monkeypatch
):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("TFSHIP_TRAIN_WORKER_MEMORY_OVERHEAD", "4g")
    known = {a["id"] for a in yarn_training.cluster.apps()}
    with pytest.raises(AirflowFailException) as failure:
        train(yarn_training, "too-big", train_workers=2)
    assert "the cluster refused 2 training workers" in str(failure.value)
    assert "is above the max threshold (2048 MB) of this cluster" in str(failure.value), failure.value
    assert {a["id"] for a in yarn_training.cluster.apps()} == known, "spark-submit refuses before submitting"
