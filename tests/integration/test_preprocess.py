"""The Spark preprocessing job on real Spark: bad input, determinism, formats, hashing."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import posixpath

import pytest

from tfship.data.datasets import DatasetSpec, dataset_spec
from tfship.data.preprocess import preprocess_day
from tfship.data.sampledata import write_day
from tfship.data.stats import check_stats, read_stats
from tfship.errors import PreprocessError

pytestmark = pytest.mark.spark
D = dt.date(2026, 11, 25)
RAW = "raw/mnist/dt=2026-11-25"


def row(row_id, label=3, pixels=None, **extra):
    return json.dumps({"id": row_id, "label": label, "pixels": [7] * 784 if pixels is None else pixels, **extra})


def write_raw(storage, files, directory=RAW, success=True):
    storage.makedirs(directory)
    for name, content in files.items():
        if isinstance(content, list):
            content = "".join(line + "\n" for line in content).encode()
            if name.endswith(".gz"):
                content = gzip.compress(content, mtime=0)
        with storage.open_write(posixpath.join(directory, name)) as handle:
            handle.write(content)
    if success:
        with storage.open_write(posixpath.join(directory, "_SUCCESS")) as handle:
            handle.write(b"")


def read_records(storage, path):
    import tensorflow as tf

    with storage.open_read(path) as handle:
        data = handle.read()
    local = f"/tmp/tfship-test-{hashlib.md5(data).hexdigest()}.tfrecord.gz"
    with open(local, "wb") as out:
        out.write(data)
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset([local], compression_type="GZIP")]


def quarantine_lines(storage):
    out = []
    directory = "quarantine/mnist/dt=2026-11-25"
    for name in storage.list(directory):
        if name.endswith(".jsonl.gz"):
            with storage.open_read(posixpath.join(directory, name)) as handle:
                out += [json.loads(line) for line in gzip.decompress(handle.read()).splitlines()]
    return out


def run(spark, storage, spec="mnist", **kwargs):
    return preprocess_day(spark, storage, spec=dataset_spec(spec) if isinstance(spec, str) else spec, day=D, **kwargs)


def test_every_kind_of_bad_row_is_counted_and_quarantined_with_its_line(spark, local_storage):
    bad = {
        "broken_json": ['{"id": "b1", "label": 3, "pix', "not json at all"],
        "wrong_pixel_count": [row("w1", pixels=[1] * 783), row("w2", pixels=[1] * 785)],
        "label_out_of_range": [row("l1", label=10), row("l2", label=-1)],
        "label_not_integer": [row("l3", label="3"), row("l4", label=3.5)],
        "non_numeric_pixel": [row("n1", pixels=[1] * 783 + ["x"]), row("n2", pixels=[1.5] * 784)],
        "pixel_out_of_range": [row("p1", pixels=[256] + [0] * 783)],
        "missing_id": [row(""), json.dumps({"label": 1, "pixels": [0] * 784})],
        "empty_line": [""],
    }
    good = [row(f"g{i}", label=i % 10) for i in range(40)]
    dups = [row("g1", label=1, pixels=[9] * 784), row("g2", label=2, pixels=[8] * 784)]
    lines = good + dups + [line for lines in bad.values() for line in lines]
    write_raw(local_storage, {"part-00000.jsonl.gz": lines[:30], "part-00001.jsonl": lines[30:]})

    stats = run(spark, local_storage)

    expected = {reason: len(lines) for reason, lines in bad.items()} | {"duplicate_id": 2}
    assert stats["quarantined"] == expected
    assert stats["rows_read"] == len(lines)
    assert stats["rows_written"]["train"] + stats["rows_written"]["eval"] == 40
    assert sum(stats["label_histogram"].values()) == 40
    quarantined = quarantine_lines(local_storage)
    not_integer = sorted(q["line"] for q in quarantined if q["reason"] == "label_not_integer")
    assert not_integer == sorted(bad["label_not_integer"])
    assert all(q["source"].endswith((".jsonl", ".jsonl.gz")) for q in quarantined)
    assert len(quarantined) == sum(expected.values())


def test_duplicate_survivor_is_the_same_whatever_the_file_order(spark, local_storage):
    copies = [row("dup", label=1, pixels=[v] * 784) for v in (5, 6, 7)]
    survivor = min(copies, key=lambda line: hashlib.md5(line.encode()).hexdigest())
    expected_pixel = json.loads(survivor)["pixels"][0]
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        local_storage.delete(RAW, recursive=True)
        write_raw(local_storage, {f"part-{i}.jsonl": [copies[j]] for i, j in enumerate(order)})
        stats = run(spark, local_storage, eval_share=0.01, train_shards=1)
        assert stats["quarantined"] == {"duplicate_id": 2}
        split = "train" if stats["rows_written"]["train"] else "eval"
        records = read_records(local_storage, f"features/mnist/dt=2026-11-25/{split}/part-00000.tfrecord.gz")
        assert [r.features.feature["image"].bytes_list.value[0][0] for r in records] == [expected_pixel]


def test_rerun_gives_byte_identical_shards_and_replaces_the_partition(spark, local_storage):
    write_day(local_storage, D, rows=600, shards=3, bad_fraction=0.05)
    first = run(spark, local_storage)
    local_storage.makedirs("features/mnist/dt=2026-11-25/stray")  # must not survive a rerun
    second = run(spark, local_storage)
    assert [s["md5"] for s in first["shards"]] == [s["md5"] for s in second["shards"]]
    assert first == second
    assert "stray" not in local_storage.list("features/mnist/dt=2026-11-25")
    assert not [n for n in local_storage.list("features/mnist") if n.startswith(".")]
    for shard in second["shards"]:
        path = f"features/mnist/dt=2026-11-25/{shard['path']}"
        with local_storage.open_read(path) as handle:
            assert hashlib.md5(handle.read()).hexdigest() == shard["md5"]
        assert len(read_records(local_storage, path)) == shard["records"]


def day_files(storage) -> dict[str, bytes]:
    """Every file of the day's features and quarantine partitions (a local storage root)."""
    root = storage.root
    return {
        str(path.relative_to(root)): path.read_bytes()
        for directory in ("features/mnist/dt=2026-11-25", "quarantine/mnist/dt=2026-11-25")
        for path in sorted((root / directory).rglob("*"))
        if path.is_file()
    }


def test_output_is_the_same_whatever_spark_parallelism(spark, local_storage):
    write_day(local_storage, D, rows=1500, shards=3, bad_fraction=0.05)
    one = run(spark, local_storage, partitions=1)
    one_files = day_files(local_storage)
    nine = run(spark, local_storage, partitions=9)
    nine_files = day_files(local_storage)
    assert one == nine
    assert sorted(one_files) == sorted(nine_files)
    assert [name for name in one_files if one_files[name] != nine_files[name]] == []
    # One quarantine file per output part that quarantined lines (4 train, 1 eval, 1 without id).
    quarantine = sorted(n.rsplit("/", 1)[1] for n in one_files if n.startswith("quarantine/") and n.endswith(".gz"))
    assert len(quarantine) >= 2 and set(quarantine) <= {f"part-{p:05d}.jsonl.gz" for p in range(6)}, quarantine
    assert (
        sum(len(gzip.decompress(one_files[f"quarantine/mnist/dt=2026-11-25/{n}"]).splitlines()) for n in quarantine)
        == (one["quarantined_total"])
    )
    assert not [n for n in one_files if "/." in n or n.endswith(".crc")], sorted(one_files)


def test_a_line_whose_id_key_repeats_is_quarantined_as_ambiguous(spark, local_storage):
    twice = '{"id": "first", "label": 3, "pixels": [7' + ", 7" * 783 + '], "id": "second"}'
    write_raw(local_storage, {"part-0.jsonl": [row("plain"), twice]})
    stats = run(spark, local_storage)
    assert stats["quarantined"] == {"ambiguous_id": 1}
    assert [q["line"] for q in quarantine_lines(local_storage)] == [twice]
    assert stats["rows_written"]["train"] + stats["rows_written"]["eval"] == 1


def test_records_carry_ids_labels_images_and_a_stable_split(spark, local_storage):
    write_day(local_storage, D, rows=400, shards=2, bad_fraction=0.0)
    stats = run(spark, local_storage, eval_share=0.25)
    assert stats["rows_written"]["train"] + stats["rows_written"]["eval"] == 400
    assert 0.15 < stats["rows_written"]["eval"] / 400 < 0.35
    source = {}
    for name in local_storage.list(RAW):
        if name.endswith(".gz"):
            with local_storage.open_read(f"{RAW}/{name}") as handle:
                for line in gzip.decompress(handle.read()).splitlines():
                    record = json.loads(line)
                    source[record["id"]] = record
    seen = {}
    for shard in stats["shards"]:
        for example in read_records(local_storage, f"features/mnist/dt=2026-11-25/{shard['path']}"):
            feature = example.features.feature
            row_id = feature["id"].bytes_list.value[0].decode()
            seen[row_id] = shard["split"]
            assert feature["label"].int64_list.value[0] == source[row_id]["label"]
            assert list(feature["image"].bytes_list.value[0]) == source[row_id]["pixels"]
    assert set(seen) == set(source)
    # The split is a function of the id alone: a later day with the same ids splits the same way.
    local_storage.delete("features", recursive=True)
    again = run(spark, local_storage, eval_share=0.25, train_shards=2)
    assert again["rows_written"] == stats["rows_written"]


def test_parquet_input_is_read_like_json(spark, local_storage, tmp_path):
    rows = [(f"q{i}", i % 10, [i % 256] * 784) for i in range(30)] + [("q-bad", 12, [0] * 784)]
    frame = spark.createDataFrame(rows, "id string, label int, pixels array<int>")
    frame.coalesce(1).write.parquet(str(tmp_path / "pq"))
    produced = next(p for p in (tmp_path / "pq").iterdir() if p.name.endswith(".parquet"))
    write_raw(local_storage, {"part-00000.parquet": produced.read_bytes()})
    stats = run(spark, local_storage)
    assert stats["rows_read"] == 31
    assert stats["quarantined"] == {"label_out_of_range": 1}
    assert sum(stats["rows_written"].values()) == 30


def test_truncated_gzip_fails_naming_the_file_and_keeps_the_previous_output(spark, local_storage):
    write_day(local_storage, D, rows=200, shards=2, bad_fraction=0.0)
    before = run(spark, local_storage)
    path = f"{RAW}/part-00001.jsonl.gz"
    with local_storage.open_read(path) as handle:
        data = handle.read()
    with local_storage.open_write(path) as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(PreprocessError, match=r"raw file .*part-00001\.jsonl\.gz is unreadable"):
        run(spark, local_storage)
    assert read_stats(local_storage, "mnist", D) == before
    assert not [n for n in local_storage.list("features/mnist") if n.startswith(".")]


def test_missing_partition_is_named_and_nothing_is_written(spark, local_storage):
    with pytest.raises(PreprocessError, match=r"raw partition .*raw/mnist/dt=2026-11-25 does not exist"):
        run(spark, local_storage)
    assert not local_storage.exists("features")


def test_partition_without_success_marker_is_refused(spark, local_storage):
    write_raw(local_storage, {"part-0.jsonl": [row("a")]}, success=False)
    with pytest.raises(PreprocessError, match="has no _SUCCESS"):
        run(spark, local_storage)


def test_empty_partition_writes_zero_rows_and_validation_refuses_it(spark, local_storage):
    write_raw(local_storage, {})
    stats = run(spark, local_storage)
    assert stats["rows_read"] == 0 and stats["rows_written"] == {"train": 0, "eval": 0}
    with pytest.raises(PreprocessError, match="zero valid rows"):
        check_stats(read_stats(local_storage, "mnist", D), max_quarantine_share=0.5)


def test_quarantine_share_over_the_limit_is_refused(spark, local_storage):
    write_raw(local_storage, {"p.jsonl": [row(f"g{i}") for i in range(8)] + ["{broken", "{broken2"]})
    stats = run(spark, local_storage)
    assert check_stats(stats, max_quarantine_share=0.25)["quarantine_share"] == 0.2
    with pytest.raises(PreprocessError, match=r"2 of 10 rows \(20\.0%\).*over the limit of 10\.0%"):
        check_stats(stats, max_quarantine_share=0.1)


def test_unknown_file_format_is_named(spark, local_storage):
    write_raw(local_storage, {"part-0.csv": b"id,label\n"})
    with pytest.raises(PreprocessError, match=r"unknown format: \['part-0\.csv'\]"):
        run(spark, local_storage)


# ---- feature-ID hashing, checked against an independent XXH64 -----------------------------

M64 = (1 << 64) - 1
P1, P2, P3, P4, P5 = (
    11400714785074694791, 14029467366897019727, 1609587929392839161, 9650029242287828579, 2870177450012600261,
)  # fmt: skip


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def _round(acc, lane):
    return (_rotl((acc + lane * P2) & M64, 31) * P1) & M64


def xxh64(data: bytes, seed: int) -> int:
    """Reference XXH64 (the published algorithm), returned as a signed int64 like Spark."""
    n, i = len(data), 0
    lane = lambda at, width: int.from_bytes(data[at : at + width], "little")  # noqa: E731
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed & M64, (seed - P1) & M64]
        while i <= n - 32:
            v = [_round(v[k], lane(i + 8 * k, 8)) for k in range(4)]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & M64
        for value in v:
            h = ((h ^ _round(0, value)) * P1 + P4) & M64
    else:
        h = (seed + P5) & M64
    h = (h + n) & M64
    while i + 8 <= n:
        h = (_rotl(h ^ _round(0, lane(i, 8)), 27) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        h = (_rotl(h ^ (lane(i, 4) * P1 & M64), 23) * P2 + P3) & M64
        i += 4
    while i < n:
        h = (_rotl(h ^ (data[i] * P5 & M64), 11) * P1) & M64
        i += 1
    h = ((h ^ (h >> 33)) * P2) & M64
    h = ((h ^ (h >> 29)) * P3) & M64
    h ^= h >> 32
    return h - (1 << 64) if h >= 1 << 63 else h


def test_reference_xxh64_matches_published_vectors():
    assert xxh64(b"", 0) == 0xEF46DB3751D8E999 - (1 << 64)


def test_declared_string_columns_become_spark_xxhash64_features(spark, local_storage):
    spec = DatasetSpec("mnist", hashed_columns=("id", "campaign"))
    campaigns = ["spring-sale", "winter-clearance-2026-very-long-campaign-name", "x"]
    lines = [row(f"c{i}", campaign=campaigns[i % 3]) for i in range(12)] + [row("no-campaign")]
    write_raw(local_storage, {"part-0.jsonl": lines})
    stats = run(spark, local_storage, spec=spec, train_shards=1, eval_share=0.01)
    assert stats["quarantined"] == {"missing_hashed_column": 1}
    examples = []
    for shard in stats["shards"]:
        examples += read_records(local_storage, f"features/mnist/dt=2026-11-25/{shard['path']}")
    assert len(examples) == 12
    for example in examples:
        feature = example.features.feature
        row_id = feature["id"].bytes_list.value[0].decode()
        campaign = campaigns[int(row_id[1:]) % 3]
        assert feature["campaign_hash"].int64_list.value[0] == xxh64(campaign.encode(), 42)
        assert feature["id_hash"].int64_list.value[0] == xxh64(row_id.encode(), 42)


@pytest.mark.hdfs
def test_preprocess_on_real_hdfs(spark, hdfs_storage):
    write_day(hdfs_storage, D, rows=300, shards=2, bad_fraction=0.05)
    stats = preprocess_day(spark, hdfs_storage, spec=dataset_spec("mnist"), day=D)
    assert stats["rows_read"] == 300
    assert stats["quarantined_total"] == 15
    assert stats["source"].startswith("hdfs://")
    assert read_stats(hdfs_storage, "mnist", D) == stats
    assert hdfs_storage.list("features/mnist/dt=2026-11-25") == ["_SUCCESS", "_stats.json", "eval", "train"]


def test_local_spark_listens_on_loopback_only(spark, local_storage):
    """The embedded defaults' SPARK_LOCAL_IP: the driver and block manager of local Spark bind 127.0.0.1."""
    from tests.integration.test_yarn import LOOPBACK_HOSTS, listeners

    write_raw(local_storage, {"part-0.jsonl": [row(f"l{i}") for i in range(20)]})
    run(spark, local_storage)  # the job has run: every server of the driver JVM is up
    jvm = spark.sparkContext._gateway.proc.pid  # pyspark's py4j gateway: the driver's JVM
    found = listeners({jvm})
    assert found, "the driver JVM listens on nothing?"
    outside = [(pid, address) for pid, address in found if address.rsplit(":", 1)[0] not in LOOPBACK_HOSTS]
    assert outside == [], f"local Spark listens beyond loopback (is SPARK_LOCAL_IP=127.0.0.1 set?): {outside}"
