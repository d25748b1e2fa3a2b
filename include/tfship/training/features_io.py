"""The one tf.data reader over a day's TFRecords (schema from tfship.data.schema).

On an `hdfs://` root the shards are first staged to local disk through the storage layer,
each checked against the md5 that `_stats.json` recorded; TensorFlow then reads local files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.data.schema import decode_batch, parse_batch
from tfship.data.stats import read_stats
from tfship.errors import TfshipError
from tfship.paths import features_dir
from tfship.release.manifest import md5_of_stream
from tfship.storage import LocalStorage, Storage

CACHE_LIMIT_BYTES = 2 << 30  # decoded records kept in memory below this size
SUBSAMPLE_BUCKETS = 1000


class FeaturesError(TfshipError):
    """The day's features cannot be used for training; the message names the partition or shard."""


@dataclass(frozen=True)
class LocalFeatures:
    """A day's shards on local disk, by split, with the stats they were checked against."""

    stats: dict
    files: dict[str, list[str]]

    def examples(self, split: str) -> int:
        """Records in a split, from the stats."""
        return int(self.stats["rows_written"][split])


def stage_features(storage: Storage, dataset: str, day: dt.date, local_root: Path) -> LocalFeatures:
    """Local, md5-verified copies of the day's shards (read in place on a file:// root)."""
    stats = read_stats(storage, dataset, day)
    directory = features_dir(dataset, day)
    files: dict[str, list[str]] = {"train": [], "eval": []}
    for shard in stats["shards"]:
        source = posixpath.join(directory, shard["path"])
        if isinstance(storage, LocalStorage):
            local = Path(storage.uri(source).removeprefix("file://"))
            with open(local, "rb") as handle:
                md5, _ = md5_of_stream(handle)
        else:
            local = local_root / dataset / f"dt={day.isoformat()}" / shard["path"]
            md5 = _copy_if_changed(storage, source, local, shard["md5"])
        if md5 != shard["md5"]:
            raise FeaturesError(
                f"shard {storage.uri(source)} has md5 {md5} but _stats.json says {shard['md5']}: not training on it"
            )
        files[shard["split"]].append(str(local))
    if not files["train"]:
        raise FeaturesError(f"features partition {storage.uri(directory)} lists no train shard")
    return LocalFeatures(stats, files)


def _copy_if_changed(storage: Storage, source: str, local: Path, want_md5: str) -> str:
    if local.exists():
        with open(local, "rb") as handle:
            if md5_of_stream(handle)[0] == want_md5:
                return want_md5
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(local.name + ".partial")
    md5 = hashlib.md5()
    with storage.open_read(source) as remote, open(partial, "wb") as out:
        while chunk := remote.read(1 << 20):
            md5.update(chunk)
            out.write(chunk)
    partial.replace(local)
    return md5.hexdigest()


parse_records = parse_batch  # the reader's parser is the schema module's, shared with the writer


def make_dataset(
    files: list[str],
    *,
    batch_size: int,
    training: bool,
    seed: int,
    examples: int | None = None,
    folds: tuple[int, int, bool] | None = None,
    subsample: float | None = None,
    drop_remainder: bool | None = None,
) -> Any:
    """(image, label) batches: interleaved shards, batch-then-parse, cache when small, prefetch.

    `folds=(k, i, holdout)` keeps rows whose hashed id falls in fold i (holdout) or not;
    `subsample` keeps that share of rows, also chosen by hashed id (stable across runs).
    """
    import tensorflow as tf

    if not files:
        raise FeaturesError("no TFRecord files to read")
    drop_remainder = training if drop_remainder is None else drop_remainder
    autotune = tf.data.AUTOTUNE
    names = tf.data.Dataset.from_tensor_slices(sorted(files))
    if training:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=False)
    records = names.interleave(
        lambda name: tf.data.TFRecordDataset(name, compression_type="GZIP"),
        cycle_length=min(4, len(files)),
        num_parallel_calls=autotune,
        deterministic=True,
    )
    if folds is not None or subsample is not None:
        records = records.batch(1024).map(parse_records, num_parallel_calls=autotune).unbatch()
        if subsample is not None:
            bucket = round(subsample * SUBSAMPLE_BUCKETS)
            records = records.filter(lambda r: tf.math.floormod(r["id_hash"] // 7919, SUBSAMPLE_BUCKETS) < bucket)
        if folds is not None:
            k, index, holdout = folds
            in_fold = lambda r: tf.equal(tf.math.floormod(r["id_hash"], k), index)  # noqa: E731
            records = records.filter(in_fold if holdout else lambda r: tf.logical_not(in_fold(r)))
        pairs = records.map(lambda r: (r["image"], r["label"]))
        pairs = pairs.cache()
        if training:
            pairs = pairs.shuffle(8192, seed=seed, reshuffle_each_iteration=True)
        return pairs.batch(batch_size, drop_remainder=drop_remainder).prefetch(autotune)
    if examples is not None and examples * 900 < CACHE_LIMIT_BYTES:
        records = records.cache()
    if training:
        records = records.shuffle(min(examples or 10_000, 50_000), seed=seed, reshuffle_each_iteration=True)
    batches = records.batch(batch_size, drop_remainder=drop_remainder)
    parsed = batches.map(decode_batch, num_parallel_calls=autotune, deterministic=True)
    return parsed.prefetch(autotune)
