"""The statistics of a day's features partition (`_stats.json`): merged from the partitions, read, checked."""

from __future__ import annotations

import datetime as dt
import json
import posixpath
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tfship.data.profile import merge_profiles
from tfship.data.quality import REASONS
from tfship.data.schema import NUM_CLASSES, SCHEMA_VERSION
from tfship.errors import PreprocessError
from tfship.paths import SUCCESS_MARKER, features_dir
from tfship.storage import Storage

STATS_FILE = "_stats.json"


def merge_stats(parts: Sequence[dict], **meta: Any) -> dict:
    """One `_stats.json` from the per-partition statistics."""
    quarantined: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    shards = []
    for part in parts:
        quarantined.update(part["quarantined"])
        labels.update(part["labels"])
        shards.extend(part["shards"])
    shards.sort(key=lambda s: s["path"])
    written = {split: sum(s["records"] for s in shards if s["split"] == split) for split in ("train", "eval")}
    rows_read = sum(part["rows_read"] for part in parts)
    stats = {
        **meta,
        "schema_version": SCHEMA_VERSION,
        "rows_read": rows_read,
        "rows_written": written,
        "quarantined": {reason: quarantined[reason] for reason in REASONS if quarantined[reason]},
        "quarantined_total": sum(quarantined.values()),
        "label_histogram": {str(label): labels[str(label)] for label in range(NUM_CLASSES)},
        "shards": shards,
        # Derived per-image features with fixed-bin histograms: what the drift check compares day over day.
        "profile": merge_profiles(part.get("profile") for part in parts),
    }
    if rows_read != sum(written.values()) + stats["quarantined_total"]:
        raise PreprocessError(f"row accounting does not balance: {stats}")
    return stats


def read_stats(storage: Storage, dataset: str, day: dt.date) -> dict:
    """The `_stats.json` of a finished features partition, or a clear error."""
    directory = features_dir(dataset, day)
    if not storage.exists(posixpath.join(directory, SUCCESS_MARKER)):
        raise PreprocessError(f"features partition {storage.uri(directory)} is not complete (no {SUCCESS_MARKER})")
    with storage.open_read(posixpath.join(directory, STATS_FILE)) as handle:
        return json.loads(handle.read())


def check_stats(stats: dict, *, max_quarantine_share: float) -> dict:
    """Refuse a partition with no valid rows or too many quarantined ones; return a short summary."""
    written = sum(stats["rows_written"].values())
    read = stats["rows_read"]
    if written == 0:
        raise PreprocessError(f"features of {stats['dataset']} for {stats['day']} hold zero valid rows (read {read})")
    share = stats["quarantined_total"] / read if read else 0.0
    if share > max_quarantine_share:
        raise PreprocessError(
            f"{stats['quarantined_total']} of {read} rows ({share:.1%}) of {stats['dataset']} for {stats['day']} "
            f"were quarantined, over the limit of {max_quarantine_share:.1%}: {stats['quarantined']}"
        )
    return {"rows_read": read, "rows_written": stats["rows_written"], "quarantine_share": round(share, 6)}
