"""Training on real TensorFlow: replicas, export, candidate files, determinism, resume, bad input, CV."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.features_support import write_features
from tfship.errors import PreprocessError
from tfship.release.manifest import manifest_for_directory, read_manifest
from tfship.training.features_io import FeaturesError, stage_features
from tfship.training.train import TrainingError, check_trainable

D = dt.date(2026, 11, 24)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def train_process(storage, work_dir: Path, *extra: str, epochs: int = 2, replicas: int = 2) -> subprocess.Popen:
    env = dict(os.environ, TFSHIP_STORAGE_ROOT=storage.root_uri)
    command = [
        sys.executable, "-m", "jobs.train", "--day", D.isoformat(), "--work-dir", str(work_dir),
        "--epochs", str(epochs), "--replicas", str(replicas), "--global-batch", "64",
        "--hparams", json.dumps({"learning_rate": 0.003, "filters": 8}), *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(process: subprocess.Popen) -> dict:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    [line] = [line for line in output.splitlines() if line.startswith("TFSHIP_RESULT ")]
    return json.loads(line.removeprefix("TFSHIP_RESULT "))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training run shared by the candidate checks."""
    from tfship.storage import LocalStorage

    root = tmp_path_factory.mktemp("train-root")
    storage = LocalStorage(f"file://{root}")
    write_features(storage, D, rows=1500)
    result = finish(train_process(storage, tmp_path_factory.mktemp("work")))
    return storage, result


def test_candidate_holds_every_file_and_a_manifest_that_matches(trained):
    storage, result = trained
    candidate = result["candidate"]
    assert candidate == f"models/mnist/candidates/2026-11-24-{result['digest'][:8]}"
    names = set(storage.list(candidate))
    assert {"saved_model.pb", "variables", "metrics.json", "training.png", "canary.json", "MANIFEST.json"} <= names
    manifest = read_manifest(storage, candidate)
    assert manifest.digest == result["digest"]
    assert manifest_for_directory(storage, candidate, model="mnist", day="2026-11-24").digest == manifest.digest
    assert not [n for n in storage.list("models/mnist/candidates") if n.startswith(".")]


def test_export_has_the_serving_signature(trained):
    import tensorflow as tf

    storage, result = trained
    loaded = tf.saved_model.load(storage.uri(result["candidate"]).removeprefix("file://"))
    signature = loaded.signatures["serving_default"]
    [spec] = signature.structured_input_signature[1].values()
    assert list(signature.structured_input_signature[1]) == ["input_image"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 28, 28, 1]
    [(name, output)] = signature.structured_outputs.items()
    assert name == "probabilities" and output.shape.as_list() == [None, 10]


def test_metrics_and_canary_set_describe_the_model(trained):
    import tensorflow as tf

    storage, result = trained
    directory = storage.uri(result["candidate"]).removeprefix("file://")
    metrics = json.loads(Path(directory, "metrics.json").read_text())
    assert metrics["strategy"] == {"kind": "cpu_replicas", "replicas": 2, "workers": 1}
    assert metrics["per_replica_batch"] == 32 and metrics["global_batch"] == 64
    assert metrics["eval_examples"] == 300 and len(metrics["history"]) == 2
    assert metrics["eval_accuracy"] == result["eval_accuracy"] and metrics["eval_accuracy"] > 0.3
    canary = json.loads(Path(directory, "canary.json").read_text())
    assert len(canary["ids"]) == len(canary["labels"]) == len(canary["instances"]) == 256
    assert canary["ids"] == sorted(canary["ids"])
    offline = np.array(canary["probabilities"])
    np.testing.assert_allclose(offline.sum(axis=1), 1.0, atol=1e-5)
    serve = tf.saved_model.load(directory).signatures["serving_default"]
    online = serve(input_image=tf.constant(canary["instances"], dtype=tf.float32))["probabilities"].numpy()
    np.testing.assert_allclose(online, offline, atol=1e-5)
    assert Path(directory, "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_candidate_carries_tf_servings_warmup_requests_made_from_its_canary_rows(trained):
    import tensorflow as tf

    storage, result = trained
    directory = Path(storage.uri(result["candidate"]).removeprefix("file://"))
    path = directory / "assets.extra" / "tf_serving_warmup_requests"
    assert path.is_file() and "assets.extra/tf_serving_warmup_requests" in {
        entry.path for entry in read_manifest(storage, result["candidate"]).files
    }
    from tensorflow_serving.apis import prediction_log_pb2

    logs = [prediction_log_pb2.PredictionLog.FromString(raw.numpy()) for raw in tf.data.TFRecordDataset(str(path))]
    sizes = [tf.make_ndarray(log.predict_log.request.inputs["input_image"]).shape for log in logs]
    assert sizes == [(n, 28, 28, 1) for n in (1, 1, 1, 1, 8, 8, 32, 32)]
    canary = json.loads((directory / "canary.json").read_text())
    first = tf.make_ndarray(logs[0].predict_log.request.inputs["input_image"])
    np.testing.assert_array_equal(first[0], np.asarray(canary["instances"][0], dtype=np.float32))
    assert all(log.predict_log.request.model_spec.signature_name == "serving_default" for log in logs)


def test_same_day_data_and_params_give_the_same_candidate(trained, tmp_path):
    storage, first = trained
    process = train_process(storage, tmp_path / "fresh-work")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    [line] = [line for line in output.splitlines() if line.startswith("TFSHIP_RESULT ")]
    again = json.loads(line.removeprefix("TFSHIP_RESULT "))
    assert again["digest"] == first["digest"]
    assert again["reused"] is True
    assert again["eval_accuracy"] == first["eval_accuracy"]
    # Handed on by its training key: nothing was trained (no epoch ran, no work dir filled).
    assert "Epoch 1/" not in output
    assert not (tmp_path / "fresh-work" / "candidate").exists()


def test_another_configuration_of_the_same_day_trains_anew(trained):
    from tfship.data.stats import read_stats
    from tfship.training.model import HParams
    from tfship.training.train import TrainConfig, find_trained, training_key

    storage, first = trained
    stats = read_stats(storage, "mnist", D)

    def config(hparams: HParams, epochs: int = 2, replicas: int = 2) -> TrainConfig:
        return TrainConfig("mnist", "mnist", D, Path("unused"), hparams, epochs, global_batch=64, replicas=replicas)

    base = config(HParams(learning_rate=0.003, filters=8))
    found = find_trained(storage, base, training_key(base, stats))
    assert found is not None and found.digest == first["digest"], "the fixture's own configuration is found"
    for changed in (
        config(HParams(learning_rate=0.01, filters=8)),
        config(base.hparams, epochs=3),
        config(base.hparams, replicas=1),
    ):
        assert find_trained(storage, changed, training_key(changed, stats)) is None, changed
    moved = {**stats, "shards": [{**stats["shards"][0], "md5": "0" * 32}, *stats["shards"][1:]]}
    assert find_trained(storage, base, training_key(base, moved)) is None, "other features, other key"


def test_two_replicas_are_in_sync_and_both_run_steps():
    probe = """
import json, os, tensorflow as tf
from tfship.training.strategy import make_strategy, per_replica_batch
strategy, plan = make_strategy(replicas=2, env={})
per_replica = per_replica_batch(plan, 8)
data = tf.data.Dataset.range(16).batch(8)
seen = []
@tf.function
def step(batch):
    ctx = tf.distribute.get_replica_context()
    return ctx.replica_id_in_sync_group, tf.shape(batch)[0], ctx.all_reduce("sum", tf.reduce_sum(batch))
for batch in strategy.experimental_distribute_dataset(data):
    ids, sizes, sums = strategy.run(step, args=(batch,))
    seen.append([[int(t) for t in strategy.experimental_local_results(x)] for x in (ids, sizes, sums)])
print(json.dumps({"in_sync": strategy.num_replicas_in_sync, "per_replica": per_replica, "steps": seen}))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["in_sync"] == 2 and result["per_replica"] == 4
    # Each step: both replica ids ran, each got half the global batch, all-reduce saw the whole batch.
    assert result["steps"] == [[[0, 1], [4, 4], [28, 28]], [[0, 1], [4, 4], [92, 92]]]


def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    from tfship.storage import LocalStorage

    storage = LocalStorage(f"file://{tmp_path / 'root'}")
    write_features(storage, D, rows=2500)
    work = tmp_path / "work"
    process = train_process(storage, work, epochs=6, replicas=1)
    progress = work / "progress.jsonl"
    deadline = time.monotonic() + 300
    while not (progress.exists() and progress.read_text().count("\n") >= 2):
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epochs_before_kill = progress.read_text().count("\n")
    assert epochs_before_kill < 6
    result = finish(train_process(storage, work, epochs=6, replicas=1))
    epochs = [json.loads(line)["epoch"] for line in progress.read_text().splitlines()]
    # Resumed: the finished epochs were not trained again, and every epoch ran.
    assert epochs[:epochs_before_kill] == list(range(1, epochs_before_kill + 1))
    assert epochs.count(1) == 1 and sorted(set(epochs)) == [1, 2, 3, 4, 5, 6]
    assert result["candidate"]


def test_bad_input_is_refused_by_the_training_process(tmp_path):
    from tfship.storage import LocalStorage

    storage = LocalStorage(f"file://{tmp_path / 'root'}")
    write_features(storage, D, rows=300, labels=[4] * 300)
    output, _ = train_process(storage, tmp_path / "work").communicate(timeout=600)
    assert "TFSHIP_ERROR features of mnist for 2026-11-24 hold a single class ['4']" in output


@pytest.fixture
def features_root(tmp_path):
    from tfship.storage import LocalStorage

    return LocalStorage(f"file://{tmp_path / 'root'}")


def test_zero_train_rows_are_refused(features_root, tmp_path):
    write_features(features_root, D, rows=50, eval_every=1)
    with pytest.raises(TrainingError, match="zero train rows"):
        check_trainable(stage_features(features_root, "mnist", D, tmp_path / "local"))


def test_missing_success_marker_is_refused(features_root, tmp_path):
    write_features(features_root, D, rows=50)
    features_root.delete("features/mnist/dt=2026-11-24/_SUCCESS")
    with pytest.raises(PreprocessError, match=r"features/mnist/dt=2026-11-24 is not complete"):
        stage_features(features_root, "mnist", D, tmp_path / "local")


def test_shard_whose_md5_differs_from_the_stats_is_refused(features_root, tmp_path):
    write_features(features_root, D, rows=50)
    shard = "features/mnist/dt=2026-11-24/train/part-00001.tfrecord.gz"
    with features_root.open_read(shard) as handle:
        data = bytearray(handle.read())
    data[len(data) // 2] ^= 0xFF
    with features_root.open_write(shard) as handle:
        handle.write(bytes(data))
    with pytest.raises(FeaturesError, match=r"train/part-00001\.tfrecord\.gz has md5 .* but _stats\.json says"):
        stage_features(features_root, "mnist", D, tmp_path / "local")


@pytest.mark.hdfs
def test_hdfs_features_are_staged_locally_and_verified(hdfs_storage, tmp_path):
    stats = write_features(hdfs_storage, D, rows=60)
    local = stage_features(hdfs_storage, "mnist", D, tmp_path / "local")
    assert all(path.startswith(str(tmp_path / "local")) for path in local.files["train"] + local.files["eval"])
    assert len(local.files["train"]) == 2 and local.stats == stats


def test_cross_validation_picks_the_configuration_that_learns(features_root, tmp_path):
    from tfship.training.cv import choose_best, cross_validate, write_report
    from tfship.training.model import HParams

    write_features(features_root, D, rows=2000)
    features = stage_features(features_root, "mnist", D, tmp_path / "local")
    sane = HParams(learning_rate=0.003, filters=8, dropout=0.1)
    broken = HParams(learning_rate=0.9, filters=8, dropout=0.1)  # Adam at 0.9 diverges
    results = [
        cross_validate(features, h, folds=2, subsample=1.0, epochs=4, batch_size=32, seed=1) for h in (broken, sane)
    ]
    assert choose_best(results)["config_id"] == sane.config_id
    assert results[0]["mean_accuracy"] < 0.5 < results[1]["mean_accuracy"]
    assert len(results[1]["fold_accuracy"]) == 2
    best = write_report(results, tmp_path / "cv")
    report = json.loads((tmp_path / "cv" / "cv_results.json").read_text())
    assert report["best"] == best["config_id"] == sane.config_id
    assert (tmp_path / "cv" / "cv_results.png").stat().st_size > 1000
