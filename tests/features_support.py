"""Write a features partition directly (no Spark), in the layout preprocess produces, for model tests."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import posixpath

import numpy as np

from tfship.data.sampledata import make_images
from tfship.data.schema import encode_example, frame_record
from tfship.paths import features_dir


def write_features(storage, day: dt.date, *, rows: int = 1200, eval_every: int = 5, labels=None, seed: int = 0):
    """Shards train/part-0000{0,1} and eval/part-00000 with _stats.json and _SUCCESS; returns the stats."""
    images, made_labels = make_images(np.random.default_rng(seed), rows)
    labels = made_labels if labels is None else np.asarray(labels)
    directory = features_dir("mnist", day)
    storage.delete(directory, recursive=True)
    splits = {"train/part-00000.tfrecord.gz": [], "train/part-00001.tfrecord.gz": [], "eval/part-00000.tfrecord.gz": []}
    for index in range(rows):
        row_id = f"{day:%Y%m%d}-{index:06d}"
        id_hash = int.from_bytes(hashlib.md5(row_id.encode()).digest()[:8], "little", signed=True)
        path = "eval/part-00000.tfrecord.gz" if index % eval_every == 0 else f"train/part-0000{index % 2}.tfrecord.gz"
        record = encode_example(row_id=row_id, id_hash=id_hash, label=int(labels[index]), image=images[index].tobytes())
        splits[path].append((int(labels[index]), frame_record(record)))
    shards = []
    for path, records in splits.items():
        data = gzip.compress(b"".join(r for _, r in records), mtime=0)
        with storage.open_write(posixpath.join(directory, path)) as handle:
            handle.write(data)
        split = path.split("/")[0]
        shards.append({"path": path, "split": split, "records": len(records), "md5": hashlib.md5(data).hexdigest()})
    written = {s: sum(x["records"] for x in shards if x["split"] == s) for s in ("train", "eval")}
    histogram = {str(c): int((labels == c).sum()) for c in range(10)}
    stats = {
        "dataset": "mnist", "day": day.isoformat(), "rows_read": rows, "rows_written": written,
        "quarantined": {}, "quarantined_total": 0, "label_histogram": histogram, "shards": shards,
    }  # fmt: skip
    with storage.open_write(posixpath.join(directory, "_stats.json")) as handle:
        handle.write(json.dumps(stats).encode())
    with storage.open_write(posixpath.join(directory, "_SUCCESS")) as handle:
        handle.write(b"")
    return stats
