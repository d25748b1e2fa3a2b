"""Preprocessing throughput: the Spark job at local[1] and local[2] against one Python process.

The baseline is the simplest alternative: one Python process that reads the JSON lines,
applies the same validation, drops duplicate ids and writes gzip TFRecords with TensorFlow's
own writer and `tf.train.Example`. All runs read the same generated input in the same run.
Also prints Spark's start-up cost, and the record size and TF parse rate of the image stored
as raw bytes vs as an int64 list (why the schema uses bytes).

Usage: python bench/preprocess.py [--rows 200000]
Goal: local[2] at least 1.5x the baseline's rows/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from tfship.data.quality import validate_line
from tfship.data.sampledata import write_day
from tfship.jvm import build_hadoop_jar
from tfship.storage import LocalStorage

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 1, 15)


def baseline(raw_dir: Path, out_dir: Path) -> int:
    """One process, TensorFlow's writer: returns rows written."""
    import tensorflow as tf

    out_dir.mkdir(parents=True, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    kept: dict[str, tuple] = {}
    for path in sorted(raw_dir.glob("part-*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            for line in handle:
                _, row = validate_line(line.rstrip("\n"))
                if row is not None and row.row_id not in kept:
                    kept[row.row_id] = row
    with (
        tf.io.TFRecordWriter(str(out_dir / "train.tfrecord.gz"), options) as train,
        tf.io.TFRecordWriter(str(out_dir / "eval.tfrecord.gz"), options) as evaluation,
    ):
        for row_id in sorted(kept):
            row = kept[row_id]
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row_id.encode()])),
                        "id_hash": tf.train.Feature(int64_list=tf.train.Int64List(value=[zlib.crc32(row_id.encode())])),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[row.label])),
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.image])),
                    }
                )
            )
            (evaluation if zlib.crc32(row_id.encode()) % 10 == 0 else train).write(example.SerializeToString())
    return len(kept)


def spark_job(root: str, master: str) -> float:
    """Wall seconds of spark-submit of the real job."""
    command = [
        "spark-submit",
        "--master",
        master,
        "--conf",
        "spark.ui.enabled=false",
        "--jars",
        str(build_hadoop_jar()),
        str(PROJECT_ROOT / "include" / "jobs" / "preprocess.py"),
        "--day",
        DAY.isoformat(),
        "--storage-root",
        root,
        "--train-shards",
        "8",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def spark_startup(master: str, tmp: Path) -> float:
    """Wall seconds of spark-submit of a job that counts three lines: start-up and tear-down."""
    (tmp / "three.txt").write_text("a\nb\nc\n")
    command = [
        "spark-submit",
        "--master",
        master,
        "--conf",
        "spark.ui.enabled=false",
        str(PROJECT_ROOT / "include" / "jobs" / "spark_smoke.py"),
        f"file://{tmp}/three.txt",
        str(tmp / "out.json"),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def image_encoding_comparison(tmp: Path) -> None:
    """Record size and TF parse rate: image as raw bytes vs as an int64 list."""
    import numpy as np
    import tensorflow as tf

    from tfship.data.sampledata import make_images
    from tfship.data.schema import encode_features

    images, labels = make_images(np.random.default_rng(1), 4096)
    pairs = list(zip(images, labels, strict=True))
    as_bytes = [encode_features({"label": int(label), "image": image.tobytes()}) for image, label in pairs]
    as_ints = [encode_features({"label": int(label), "image": image.reshape(-1).tolist()}) for image, label in pairs]
    spec_bytes = {"label": tf.io.FixedLenFeature([], tf.int64), "image": tf.io.FixedLenFeature([], tf.string)}
    spec_ints = {"label": tf.io.FixedLenFeature([], tf.int64), "image": tf.io.FixedLenFeature([784], tf.int64)}

    def rate(records, spec, decode):
        tensor = tf.constant(records)
        decode(tf.io.parse_example(tensor, spec))
        start = time.perf_counter()
        for _ in range(5):
            decode(tf.io.parse_example(tensor, spec))
        return 5 * len(records) / (time.perf_counter() - start)

    bytes_rate = rate(as_bytes, spec_bytes, lambda p: tf.io.decode_raw(p["image"], tf.uint8))
    ints_rate = rate(as_ints, spec_ints, lambda p: tf.cast(p["image"], tf.uint8))
    size_bytes = sum(map(len, as_bytes)) / len(as_bytes)
    size_ints = sum(map(len, as_ints)) / len(as_ints)
    print(f"image as bytes: {size_bytes:.0f} B/record, parse {bytes_rate:,.0f} rec/s")
    print(f"image as int64: {size_ints:.0f} B/record, parse {ints_rate:,.0f} rec/s")
    print(f"bytes vs int64: size {size_bytes / size_ints:.2f}x, parse speed {bytes_rate / ints_rate:.2f}x")


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) the input, time every variant, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args(argv)
    cache = PROJECT_ROOT / "var" / "bench" / f"preprocess-{args.rows}"
    storage = LocalStorage(f"file://{cache}")
    if not storage.exists(f"raw/mnist/dt={DAY.isoformat()}/_SUCCESS"):
        print(f"generating {args.rows} rows under {cache} ...", flush=True)
        write_day(storage, DAY, rows=args.rows, shards=16, bad_fraction=0.01)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        written = baseline(cache / "raw" / "mnist" / f"dt={DAY.isoformat()}", Path(tmp) / "baseline")
        base_seconds = time.perf_counter() - start
        startup = spark_startup("local[2]", Path(tmp))
        image_encoding_comparison(Path(tmp))
    results = {master: spark_job(storage.root_uri, master) for master in ("local[1]", "local[2]")}

    base_rate = args.rows / base_seconds
    print(f"\nrows: {args.rows} read, {written} written by the baseline")
    print(f"baseline (1 Python process, TF writer): {base_seconds:6.1f} s  {base_rate:8,.0f} rows/s")
    print(f"spark start-up + tear-down (local[2]):  {startup:6.1f} s")
    for master, seconds in results.items():
        rate, net = args.rows / seconds, args.rows / max(seconds - startup, 1e-9)
        print(
            f"spark {master:<9} {seconds:6.1f} s  {rate:8,.0f} rows/s  ratio vs baseline {rate / base_rate:.2f}x"
            f"  (net of start-up {net / base_rate:.2f}x)"
        )
    ratio = args.rows / results["local[2]"] / base_rate
    print(f"goal local[2] >= 1.5x baseline: {'met' if ratio >= 1.5 else 'NOT met'} ({ratio:.2f}x)")
    print(json.dumps({"baseline_s": base_seconds, "startup_s": startup, **results, "ratio_local2": ratio}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
