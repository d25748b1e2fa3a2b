"""Train with tf.distribute on a day's features, export for TF Serving, upload a candidate.

The candidate directory is a TF Serving version directory (saved_model.pb, variables/)
plus metrics.json, training.png, canary.json, TF Serving's warmup requests (made from the canary
rows, in assets.extra/) and, written last, MANIFEST.json. It is
uploaded under a hidden name and renamed to models/<model>/candidates/<D>-<digest8>.
Nothing in it depends on the clock. A candidate records its training key (D's feature shards by
md5, the configuration, the seed): a rerun with the same key hands on that candidate and trains
nothing, so a cleared `train` or a rerun of the day never publishes a second version of one model
(bit-identical retraining is not something TF promises on a loaded CPU or after a restore).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import posixpath
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfship.data.schema import NUM_CLASSES
from tfship.data.stats import read_stats
from tfship.days import day_number
from tfship.errors import TfshipError
from tfship.paths import candidate_dir, candidates_dir
from tfship.release.manifest import (
    FileEntry,
    ManifestError,
    build_manifest,
    md5_of_stream,
    read_manifest,
    write_manifest,
)
from tfship.serving.warmup import write_warmup
from tfship.storage import Storage
from tfship.training.features_io import LocalFeatures, make_dataset, parse_records, stage_features
from tfship.training.model import HParams, build_model, export_for_serving, load_serving_fn
from tfship.training.strategy import make_strategy, per_replica_batch

CANARY_SIZE = 256
PROGRESS_FILE = "progress.jsonl"
RESUME_PREFIX = "TFSHIP_RESUME "  # the log line a resumed run prints (jobs.train hands it on)


class TrainingError(TfshipError):
    """Training cannot start or its result cannot be used; the message says why."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training process needs."""

    dataset: str
    model: str
    day: dt.date
    work_dir: Path
    hparams: HParams = field(default_factory=HParams)
    epochs: int = 4
    global_batch: int = 128
    replicas: int = 2
    workers: int = 1  # hosts training together; more than 1 needs a TF_CONFIG naming them
    extra_files: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """Seeded by D: a rerun of the same day shuffles and initialises identically."""
        return day_number(self.day) % (2**31 - 1)


@dataclass(frozen=True)
class Candidate:
    """What `train` hands on: the candidate's path on the storage root, its digest and eval scores."""

    candidate: str
    candidate_uri: str
    digest: str
    reused: bool
    eval_accuracy: float | None
    eval_loss: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (XCom)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        """Back from `to_dict`."""
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TrainResult:
    """Where the candidate went and how good it is."""

    candidate: str
    candidate_uri: str
    digest: str
    metrics: dict
    reused: bool

    def summary(self) -> Candidate:
        """The hand-over for the tasks that follow training."""
        return Candidate(
            self.candidate,
            self.candidate_uri,
            self.digest,
            self.reused,
            self.metrics.get("eval_accuracy"),
            self.metrics.get("eval_loss"),
        )


def check_trainable(features: LocalFeatures) -> None:
    """Refuse features that cannot train a classifier, naming what is missing."""
    stats = features.stats
    if features.examples("train") == 0:
        raise TrainingError(f"features of {stats['dataset']} for {stats['day']} have zero train rows")
    classes = [label for label, count in stats["label_histogram"].items() if count > 0]
    if len(classes) < 2:
        raise TrainingError(
            f"features of {stats['dataset']} for {stats['day']} hold a single class {classes}: nothing to learn"
        )
    if features.examples("eval") == 0:
        raise TrainingError(f"features of {stats['dataset']} for {stats['day']} have zero eval rows")


def _progress_callback(path: Path) -> Any:
    import keras

    class EpochProgress(keras.callbacks.Callback):
        """Append each finished epoch's logs to a file that survives a killed process."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            with open(path, "a") as handle:
                handle.write(json.dumps({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    return EpochProgress()


def read_progress(path: Path) -> list[dict]:
    """One entry per finished epoch (the latest wins when an epoch was repeated after a kill)."""
    if not path.exists():
        return []
    by_epoch = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            by_epoch[entry["epoch"]] = entry
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_training(progress: list[dict], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train and eval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [p["epoch"] for p in progress]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("loss", "train"), ("val_loss", "eval")):
        loss_axis.plot(epochs, [p.get(key) for p in progress], marker="o", label=label)
    for key, label in (("accuracy", "train"), ("val_accuracy", "eval")):
        accuracy_axis.plot(epochs, [p.get(key) for p in progress], marker="o", label=label)
    loss_axis.set(title="loss", xlabel="epoch")
    accuracy_axis.set(title="accuracy", xlabel="epoch")
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(figure)


def evaluate(serving_fn: Any, eval_files: list[str], batch_size: int = 512) -> dict:
    """Accuracy, loss and per-class accuracy of a serving function on the eval split."""
    import numpy as np

    dataset = make_dataset(eval_files, batch_size=batch_size, training=False, seed=0)
    correct = np.zeros(NUM_CLASSES)
    total = np.zeros(NUM_CLASSES)
    loss_sum, count = 0.0, 0
    for images, labels in dataset:
        probabilities = serving_fn(input_image=images)["probabilities"].numpy()
        labels = labels.numpy()
        predicted = probabilities.argmax(axis=1)
        np.add.at(total, labels, 1)
        np.add.at(correct, labels, predicted == labels)
        loss_sum += float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)).sum())
        count += len(labels)
    if count == 0:
        raise TrainingError(f"no eval rows in {eval_files}")
    return {
        "eval_examples": count,
        "eval_accuracy": round(float(correct.sum() / count), 6),
        "eval_loss": round(loss_sum / count, 6),
        "per_class_accuracy": {str(c): round(float(correct[c] / total[c]), 6) if total[c] else None for c in range(10)},
    }


def golden_set(serving_fn: Any, eval_files: list[str], size: int = CANARY_SIZE) -> dict:
    """The canary set: the first eval rows by id, their labels, and this model's own probabilities."""
    import tensorflow as tf

    records = tf.data.TFRecordDataset(sorted(eval_files), compression_type="GZIP").batch(4096).map(parse_records)
    rows = []
    for batch in records:
        columns = (batch["id"].numpy(), batch["image"].numpy(), batch["label"].numpy())
        rows += [(row_id.decode(), image, int(label)) for row_id, image, label in zip(*columns, strict=True)]
    rows.sort(key=lambda r: r[0])
    rows = rows[:size]
    if not rows:
        raise TrainingError("the eval split is empty: no canary set")
    images = tf.constant([r[1] for r in rows], dtype=tf.float32)
    probabilities = serving_fn(input_image=images)["probabilities"].numpy()
    return {
        "signature_name": "serving_default",
        "input_name": "input_image",
        "ids": [r[0] for r in rows],
        "labels": [r[2] for r in rows],
        "instances": [r[1].astype(int).tolist() for r in rows],
        "probabilities": [[round(float(p), 7) for p in row] for row in probabilities],
    }


def _local_entries(directory: Path) -> list[FileEntry]:
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        with open(path, "rb") as handle:
            md5, size = md5_of_stream(handle)
        entries.append(FileEntry(path.relative_to(directory).as_posix(), md5, size))
    return entries


def upload_candidate(storage: Storage, local: Path, *, model: str, day: dt.date) -> tuple[str, str, bool]:
    """Upload a finished local candidate; returns (path, digest, reused). Same digest: no upload."""
    manifest = build_manifest(model, day.isoformat(), _local_entries(local))
    final = candidate_dir(model, day, manifest.digest)
    if storage.exists(posixpath.join(final, "MANIFEST.json")):
        return final, manifest.digest, True
    head, name = posixpath.split(final)
    temp = posixpath.join(head, f".{name}.inprogress")
    storage.delete(temp, recursive=True)
    for entry in manifest.files:
        with open(local / entry.path, "rb") as source, storage.open_write(posixpath.join(temp, entry.path)) as target:
            shutil.copyfileobj(source, target, 1 << 20)
    write_manifest(storage, temp, manifest)  # last: its presence means the upload is whole
    storage.delete(final, recursive=True)  # a leftover without a manifest
    storage.rename(temp, final)
    return final, manifest.digest, False


def training_key(config: TrainConfig, stats: Mapping[str, Any]) -> str:
    """What decides the trained weights: D's feature shards (by md5), the configuration and the seed."""
    inputs = {
        "model": config.model,
        "dataset": config.dataset,
        "day": config.day.isoformat(),
        "shards": sorted((shard["path"], shard["md5"]) for shard in stats["shards"]),
        "hparams": config.hparams.to_dict(),
        "epochs": config.epochs,
        "global_batch": config.global_batch,
        "replicas": config.replicas,
        "workers": config.workers,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()


def find_trained(storage: Storage, config: TrainConfig, key: str) -> TrainResult | None:
    """An uploaded candidate of D whose metrics.json carries `key`, else None."""
    head = candidates_dir(config.model)
    if not storage.exists(head):
        return None
    for name in sorted(storage.list(head)):
        if not name.startswith(f"{config.day.isoformat()}-"):
            continue  # another day, or an upload in progress (hidden name)
        path = posixpath.join(head, name)
        metrics_path = posixpath.join(path, "metrics.json")
        if not storage.exists(metrics_path):
            continue
        with storage.open_read(metrics_path) as handle:
            metrics = json.loads(handle.read())
        if metrics.get("training_key") != key:
            continue
        try:
            digest = read_manifest(storage, path).digest
        except ManifestError:
            continue  # no manifest: not a whole upload
        return TrainResult(path, storage.uri(path), digest, metrics, reused=True)
    return None


def train_and_export(storage: Storage, config: TrainConfig, *, env: Mapping[str, str] | None = None) -> TrainResult:
    """Train on D's features, export, write the candidate's files, upload them (or hand on the same key's)."""
    env = os.environ if env is None else env
    key = training_key(config, read_stats(storage, config.dataset, config.day))
    # Every worker of a cluster looks before any of them trains, so all of them skip alike.
    trained = find_trained(storage, config, key)
    if trained is not None:
        return trained
    strategy, plan = make_strategy(replicas=config.replicas, env=env)  # before any other TF work
    if plan.workers != config.workers:
        raise TrainingError(
            f"asked to train on {config.workers} workers but TF_CONFIG names {plan.workers}: "
            "start every worker with the same --workers and a TF_CONFIG listing all of them"
        )
    per_replica = per_replica_batch(plan, config.global_batch)
    chief = plan.task_index == 0
    # Workers given the same --work-dir (one host, or a shared disk) must not share checkpoint,
    # progress or export files: every worker but the chief keeps them in its own subdirectory.
    work_dir = config.work_dir if chief else config.work_dir / f"worker-{plan.task_index}"
    import keras
    import tensorflow as tf

    work_dir.mkdir(parents=True, exist_ok=True)
    features = stage_features(storage, config.dataset, config.day, work_dir / "features")
    check_trainable(features)
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    train_data = make_dataset(
        features.files["train"],
        batch_size=config.global_batch,
        training=True,
        seed=config.seed,
        examples=features.examples("train"),
    )
    if features.examples("train") < config.global_batch:
        raise TrainingError(
            f"{features.examples('train')} train rows cannot fill one global batch of {config.global_batch}"
        )
    # Validation during fit uses whole batches that split evenly over the replicas (an uneven last
    # batch fails inside MirroredStrategy); the exported model is then scored on every eval row.
    validation_batch = min(config.global_batch, features.examples("eval") // plan.replicas * plan.replicas)
    eval_data = None
    if validation_batch:
        eval_data = make_dataset(
            features.files["eval"], batch_size=validation_batch, training=False, seed=config.seed, drop_remainder=True
        )
    # Several workers split each batch by rows: sharding by file (TF's default) refuses a day
    # with fewer shards than workers, and preprocess writes one eval shard.
    by_rows = tf.data.Options()
    by_rows.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_data = train_data.with_options(by_rows)
    eval_data = eval_data.with_options(by_rows) if eval_data is not None else None
    with strategy.scope():
        model = build_model(config.hparams)
    progress = work_dir / PROGRESS_FILE
    done = read_progress(progress)
    if done and (work_dir / "backup").exists():
        # BackupAndRestore restores the weights and the epoch; say where training picks up.
        last = done[-1]["epoch"]
        print(f"{RESUME_PREFIX}after epoch {last} of {config.epochs} (worker {plan.task_index})", flush=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work_dir / "backup"), save_freq="epoch", delete_checkpoint=False),
        _progress_callback(progress),
    ]
    model.fit(train_data, validation_data=eval_data, epochs=config.epochs, callbacks=callbacks, verbose=2)

    local = work_dir / "candidate"
    shutil.rmtree(local, ignore_errors=True)
    export_for_serving(model, config.hparams, local)
    if not chief:
        return TrainResult("", "", "", {}, reused=True)
    serving_fn = load_serving_fn(local)
    metrics = evaluate(serving_fn, features.files["eval"])
    history = read_progress(progress)
    metrics |= {
        "model": config.model,
        "dataset": config.dataset,
        "day": config.day.isoformat(),
        "train_examples": features.examples("train"),
        "epochs": config.epochs,
        "global_batch": config.global_batch,
        "per_replica_batch": per_replica,
        "strategy": {"kind": plan.kind, "replicas": plan.replicas, "workers": plan.workers},
        "hparams": config.hparams.to_dict(),
        "training_key": key,
        "history": [{k: round(v, 6) for k, v in entry.items()} for entry in history],
    }
    (local / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    canary = golden_set(serving_fn, features.files["eval"])
    (local / "canary.json").write_text(json.dumps(canary))
    write_warmup(
        local,
        model=config.model,
        instances=canary["instances"],
        input_name=canary["input_name"],
        signature_name=canary["signature_name"],
    )
    title = f"{config.model} {config.day.isoformat()} {config.hparams.config_id}"
    plot_training(history, local / "training.png", title)
    for name, data in config.extra_files.items():
        (local / name).write_bytes(data)
    path, digest, reused = upload_candidate(storage, local, model=config.model, day=config.day)
    return TrainResult(path, storage.uri(path), digest, metrics, reused)
