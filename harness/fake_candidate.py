"""Write a fake candidate model directory (random bytes with TF Serving's file names) to any Storage.

The layout is a TF Serving version directory plus the trainer's extras, with MANIFEST.json
written last, so the publisher cannot tell it from a trained model. No TensorFlow needed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
import random

from tfship.paths import candidate_dir
from tfship.release.manifest import FileEntry, Manifest, build_manifest, write_manifest
from tfship.storage import Storage

_WRITE_CHUNK = 4 << 20
# name -> share of the total size (the variables shard takes the rest)
_SMALL_FILES = {
    "saved_model.pb": 0.04,
    "fingerprint.pb": 0.0,
    "variables/variables.index": 0.001,
    "assets/labels.txt": 0.0,
    "metrics.json": 0.0,
    "canary.json": 0.0,
    "training.png": 0.01,
}
_DATA_FILE = "variables/variables.data-00000-of-00001"


def _shard(index: int, shards: int) -> str:
    return f"variables/variables.data-{index:05d}-of-{shards:05d}"


def _sizes(total_bytes: int, shards: int) -> dict[str, int]:
    sizes = {name: max(64, int(total_bytes * share)) for name, share in _SMALL_FILES.items()}
    data = max(shards, total_bytes - sum(sizes.values()))
    for index in range(shards):  # the variables split over `shards` files, as a big model's are
        sizes[_shard(index, shards)] = data // shards + (1 if index < data % shards else 0)
    return sizes


def write_fake_candidate(
    storage: Storage, *, model: str, day: dt.date, total_bytes: int, seed: int = 0, shards: int = 1
) -> tuple[str, Manifest]:
    """Write a candidate of about `total_bytes` (its variables in `shards` files); return its directory and manifest."""
    rng = random.Random(seed)
    staging = posixpath.join("models", model, "candidates", f".writing-{seed}")
    storage.delete(staging, recursive=True)
    entries = []
    for name, size in _sizes(total_bytes, shards).items():
        md5, left = hashlib.md5(), size
        with storage.open_write(posixpath.join(staging, name)) as handle:
            while left > 0:
                chunk = rng.randbytes(min(left, _WRITE_CHUNK))
                md5.update(chunk)
                handle.write(chunk)
                left -= len(chunk)
        entries.append(FileEntry(name, md5.hexdigest(), size))
    manifest = build_manifest(model, day.isoformat(), entries)
    write_manifest(storage, staging, manifest)
    final = candidate_dir(model, day, manifest.digest)
    storage.delete(final, recursive=True)
    storage.rename(staging, final)
    return final, manifest


def data_file() -> str:
    """The biggest file of a fake candidate (the variables shard)."""
    return _DATA_FILE
