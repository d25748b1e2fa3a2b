"""Two real training processes on loopback with MultiWorkerMirroredStrategy (TF_CONFIG), one candidate."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.features_support import write_features

D = dt.date(2026, 11, 24)
ROWS = 400  # write_features puts every 5th row in eval: 320 train rows, 80 eval rows in one shard
GLOBAL_BATCH = 32
EPOCHS = 2
GUARD_S = 600  # only a guard against a hung collective; the run takes well under a minute


@dataclass(frozen=True)
class ClusterRun:
    """What the two workers left behind."""

    root: Path
    work: Path
    logs: tuple[str, str]
    results: tuple[dict, dict]


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on loopback, all held at once so they differ."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_worker(index: int, cluster: list[str], root: Path, work: Path, log: Path) -> subprocess.Popen:
    """One `python -m jobs.train` process; both workers get the very same arguments."""
    tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
    env = dict(os.environ, TFSHIP_STORAGE_ROOT=f"file://{root}", TF_CONFIG=json.dumps(tf_config))
    command = [
        sys.executable, "-m", "jobs.train", "--day", D.isoformat(), "--work-dir", str(work),
        "--epochs", str(EPOCHS), "--replicas", "1", "--global-batch", str(GLOBAL_BATCH),
        "--hparams", json.dumps({"learning_rate": 0.003, "filters": 8}),
    ]  # fmt: skip
    # Output to a file, not a pipe: a worker blocked on a full pipe would stall its peer's collectives.
    with open(log, "wb") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)


def wait_all(processes: list[subprocess.Popen], logs: list[Path]) -> None:
    """Wait for every process; on the guard's timeout kill them all and fail with their output."""
    try:
        for process in processes:
            process.wait(timeout=GUARD_S)
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
            process.wait()
        tails = "\n".join(
            f"--- worker {i} ---\n{log.read_text(errors='replace')[-3000:]}" for i, log in enumerate(logs)
        )
        pytest.fail(f"the workers did not finish within {GUARD_S}s guard:\n{tails}")


def result_line(log: str) -> dict:
    """The single TFSHIP_RESULT line of a training log."""
    [line] = [line for line in log.splitlines() if line.startswith("TFSHIP_RESULT ")]
    return json.loads(line.removeprefix("TFSHIP_RESULT "))


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> ClusterRun:
    """Train once with two workers sharing one --work-dir, as on one host or a shared disk."""
    from tfship.storage import LocalStorage

    root = tmp_path_factory.mktemp("mw-root")
    write_features(LocalStorage(f"file://{root}"), D, rows=ROWS)
    work = tmp_path_factory.mktemp("mw-work") / "train"
    logs = [tmp_path_factory.mktemp("mw-logs") / f"worker-{i}.log" for i in range(2)]
    cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = [start_worker(i, cluster, root, work, logs[i]) for i in range(2)]
    wait_all(processes, logs)
    texts = tuple(log.read_text(errors="replace") for log in logs)
    for index, (process, text) in enumerate(zip(processes, texts, strict=True)):
        assert process.returncode == 0, f"worker {index} exited {process.returncode}:\n{text[-3000:]}"
    return ClusterRun(root, work, texts, (result_line(texts[0]), result_line(texts[1])))


def files_under(directory: Path) -> list[str]:
    """Every file below a directory, relative, sorted."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_only_the_chief_uploads_one_whole_candidate(cluster_run: ClusterRun) -> None:
    chief, other = cluster_run.results
    assert other["candidate"] == "" and other["digest"] == ""
    assert chief["candidate"] == f"models/mnist/candidates/2026-11-24-{chief['digest'][:8]}"
    # Outside the features nothing but the chief's candidate: no second candidate, no temp names.
    written = [f for f in files_under(cluster_run.root) if not f.startswith("features/")]
    candidate = cluster_run.root / chief["candidate"]
    assert written == [f"{chief['candidate']}/{name}" for name in files_under(candidate)]
    manifest = json.loads((candidate / "MANIFEST.json").read_text())
    assert manifest["digest"] == chief["digest"]
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert sorted(listed) == [f for f in files_under(candidate) if f != "MANIFEST.json"]
    assert {"saved_model.pb", "metrics.json", "canary.json", "training.png"} <= set(listed)
    for path, entry in listed.items():
        data = (candidate / path).read_bytes()
        assert (len(data), hashlib.md5(data).hexdigest()) == (entry["size"], entry["md5"]), path


def test_exported_model_answers_with_probabilities(cluster_run: ClusterRun) -> None:
    import tensorflow as tf

    from tfship.data.sampledata import make_images
    from tfship.training.model import load_serving_fn

    serve = load_serving_fn(cluster_run.root / cluster_run.results[0]["candidate"])
    images, _ = make_images(np.random.default_rng(7), 5)
    batch = tf.constant(images.reshape(5, 28, 28, 1), dtype=tf.float32)
    probabilities = serve(input_image=batch)["probabilities"].numpy()
    assert probabilities.shape == (5, 10)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_both_workers_trained_one_model_in_sync(cluster_run: ClusterRun) -> None:
    import tensorflow as tf

    from tfship.data.sampledata import make_images
    from tfship.training.model import load_serving_fn

    candidate = cluster_run.root / cluster_run.results[0]["candidate"]
    metrics = json.loads((candidate / "metrics.json").read_text())
    assert metrics["strategy"] == {"kind": "multi_worker", "replicas": 2, "workers": 2}
    assert (metrics["global_batch"], metrics["per_replica_batch"]) == (GLOBAL_BATCH, GLOBAL_BATCH // 2)
    assert (metrics["train_examples"], metrics["eval_examples"], len(metrics["history"])) == (320, 80, EPOCHS)
    # Each step takes one global batch split over the two workers: 320 rows / 32 = 10 steps per epoch.
    for log in cluster_run.logs:
        assert re.findall(r"^(\d+)/(\d+) - ", log, flags=re.MULTILINE) == [("10", "10")] * EPOCHS
    # All-reduced gradients leave both workers with the same weights: the other worker's own
    # export (kept in its subdirectory of the shared work dir) predicts exactly like the chief's.
    images, _ = make_images(np.random.default_rng(11), 8)
    batch = tf.constant(images.reshape(8, 28, 28, 1), dtype=tf.float32)
    chief = load_serving_fn(candidate)(input_image=batch)["probabilities"].numpy()
    other = load_serving_fn(cluster_run.work / "worker-1" / "candidate")(input_image=batch)["probabilities"].numpy()
    np.testing.assert_array_equal(other, chief)


def test_workers_sharing_a_work_dir_keep_their_files_apart(cluster_run: ClusterRun) -> None:
    work, chief_candidate = cluster_run.work, cluster_run.root / cluster_run.results[0]["candidate"]
    # The chief's local candidate is exactly what it uploaded, nothing from the other worker.
    assert files_under(work / "candidate") == [f for f in files_under(chief_candidate) if f != "MANIFEST.json"]
    # The other worker has its own checkpoint and progress, and exported only the SavedModel.
    other = work / "worker-1"
    assert (other / "backup" / "latest.weights.h5").is_file() and (work / "backup" / "latest.weights.h5").is_file()
    for progress in (work / "progress.jsonl", other / "progress.jsonl"):
        assert [json.loads(line)["epoch"] for line in progress.read_text().splitlines()] == [1, 2]
    assert files_under(other / "candidate") == [
        "saved_model.pb",
        "variables/variables.data-00000-of-00001",
        "variables/variables.index",
    ]
