from __future__ import annotations

import datetime as dt
import gzip
import json
from collections import Counter

from tfship.data.sampledata import IMAGE_SIDE, day_lines, write_day

D = dt.date(2026, 11, 25)


def _parse(lines):
    good, broken = [], 0
    for line in lines:
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            broken += 1
    return good, broken


def test_a_day_is_deterministic_and_days_differ():
    first, _ = day_lines(D, 200, 0.05)
    again, _ = day_lines(D, 200, 0.05)
    other, _ = day_lines(D + dt.timedelta(days=1), 200, 0.05)
    assert first == again
    assert first != other


def test_clean_rows_are_valid_mnist_style_records():
    lines, counts = day_lines(D, 300, 0.0)
    assert sum(counts.values()) == 0
    rows, broken = _parse(lines)
    assert broken == 0 and len(rows) == 300
    assert len({row["id"] for row in rows}) == 300
    for row in rows:
        assert 0 <= row["label"] <= 9
        assert len(row["pixels"]) == IMAGE_SIDE * IMAGE_SIDE
        assert all(isinstance(p, int) and 0 <= p <= 255 for p in row["pixels"])
    # Real digits, not noise: every class appears and images have ink in the middle.
    assert set(Counter(row["label"] for row in rows)) == set(range(10))
    centre = [sum(row["pixels"][14 * 28 + 10 : 14 * 28 + 18]) for row in rows]
    border = [sum(row["pixels"][0:8]) for row in rows]
    assert sum(centre) > 5 * sum(border)


def test_malformed_rows_match_their_counts():
    lines, counts = day_lines(D, 1000, 0.1)
    assert sum(counts.values()) == 100
    rows, broken = _parse(lines)
    assert broken == counts["broken_json"]
    ids = Counter(row["id"] for row in rows)
    assert sum(n - 1 for n in ids.values()) == counts["duplicate_id"]
    assert sum(1 for r in rows if len(r["pixels"]) != 784) == counts["wrong_length"]
    assert sum(1 for r in rows if not 0 <= r["label"] <= 9) == counts["label_out_of_range"]
    assert sum(1 for r in rows if any(not isinstance(p, int) for p in r["pixels"])) == counts["non_numeric_pixel"]


def test_write_day_writes_shards_then_success(local_storage):
    summary = write_day(local_storage, D, rows=250, shards=3, bad_fraction=0.04)
    names = local_storage.list("raw/mnist/dt=2026-11-25")
    assert names == ["_SUCCESS", "part-00000.jsonl.gz", "part-00001.jsonl.gz", "part-00002.jsonl.gz"]
    total = 0
    for name in names[1:]:
        with local_storage.open_read(f"raw/mnist/dt=2026-11-25/{name}") as handle:
            total += len(gzip.decompress(handle.read()).decode().splitlines())
    assert total == 250
    assert summary.rows == 250 and sum(summary.malformed.values()) == 10
    assert summary.valid_rows == 240


def test_rewriting_a_day_is_byte_identical(local_storage):
    write_day(local_storage, D, rows=120, shards=2)
    with local_storage.open_read("raw/mnist/dt=2026-11-25/part-00001.jsonl.gz") as handle:
        first = handle.read()
    write_day(local_storage, D, rows=120, shards=2)
    with local_storage.open_read("raw/mnist/dt=2026-11-25/part-00001.jsonl.gz") as handle:
        assert handle.read() == first
