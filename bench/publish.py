"""Publication speed on a real HDFS: gated no-op, full publish, and a plain WebHDFS download baseline.

For a ~6 MB model (the size of the 1.38M-parameter MNIST CNN) and a big one (`--big-mb`, default
500), all in the same run against one MiniDFSCluster: the md5-gated no-op, a full publication
(verify + fsync + rename + log), and `hdfs.InsecureClient.download` of the same files to local
disk. Prints publish / plain download (goal at most 1.3), the no-op time, and the factor against
the 2 minutes the reference team needed to get a model online.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import posixpath
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tfship.config import StorageConfig
from tfship.release.publish import PublishPolicy, publish_candidate
from tfship.release.transfer import Source
from tfship.storage import WebHdfsStorage

# harness/ sits at the project root, which `python bench/publish.py` does not put on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.fake_candidate import write_fake_candidate
from harness.hdfs import MiniHdfs

REFERENCE_S = 120.0
USER = "root"


def _plain_download(webhdfs_url: str, hdfs_dir: str, local_dir: Path, files: list[str]) -> float:
    """The transport's own speed: InsecureClient.download of each file, as a user would do it."""
    from hdfs import InsecureClient

    client = InsecureClient(webhdfs_url, user=USER)
    started = time.perf_counter()
    for name in files:
        destination = local_dir / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        client.download(posixpath.join(hdfs_dir, name), str(destination), overwrite=True)
    return time.perf_counter() - started


def _measure(cluster: MiniHdfs, work: Path, label: str, size_bytes: int, seed: int) -> dict[str, float]:
    root = f"{cluster.rpc_uri}/bench/{label}"
    storage = WebHdfsStorage(root, [cluster.webhdfs_url], USER)
    storage.delete("", recursive=True)
    day = dt.date(2026, 6, 1)
    candidate, manifest = write_fake_candidate(storage, model="mnist", day=day, total_bytes=size_bytes, seed=seed)
    source = Source(StorageConfig(root, (cluster.webhdfs_url,), USER))
    files = [entry.path for entry in manifest.files] + ["MANIFEST.json"]
    hdfs_dir = posixpath.join(storage.root, candidate)

    plain_dir, serving_dir = work / f"{label}-plain", work / f"{label}-serving"
    # Alternate baseline and publish twice; keep each one's best, so page-cache warmth is shared fairly.
    plain_s, publish_s = [], []
    for attempt in range(2):
        shutil.rmtree(plain_dir, ignore_errors=True)
        plain_s.append(_plain_download(cluster.webhdfs_url, hdfs_dir, plain_dir, files))
        shutil.rmtree(serving_dir, ignore_errors=True)
        started = time.perf_counter()
        publish_candidate(source, candidate, serving_dir, host="bench", run_id=f"bench-{attempt}", rng=random.Random(0))
        publish_s.append(time.perf_counter() - started)
    started = time.perf_counter()
    result = publish_candidate(source, candidate, serving_dir, host="bench", run_id="noop", policy=PublishPolicy())
    noop_s = time.perf_counter() - started
    assert not result.transferred
    shutil.rmtree(plain_dir, ignore_errors=True)
    shutil.rmtree(serving_dir, ignore_errors=True)
    storage.delete("", recursive=True)
    return {"bytes": manifest.total_bytes, "plain": min(plain_s), "publish": min(publish_s), "noop": noop_s}


def main(argv: list[str]) -> int:
    """Start a MiniDFSCluster, measure both model sizes, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big-mb", type=int, default=500)
    parser.add_argument("--small-mb", type=float, default=5.5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tfship-bench-") as tmp:
        work = Path(tmp)
        cluster = MiniHdfs(work / "hdfs")
        cluster.start()
        try:
            rows = [
                ("small", _measure(cluster, work, "small", int(args.small_mb * 1_000_000), seed=1)),
                ("big", _measure(cluster, work, "big", args.big_mb * 1_000_000, seed=2)),
            ]
        finally:
            cluster.stop()
    print(f"publication bench on a MiniDFSCluster (WebHDFS on loopback), {os.cpu_count()} CPUs")
    for label, row in rows:
        mb = row["bytes"] / 1e6
        ratio = row["publish"] / row["plain"]
        print(
            f"{label:5s} {mb:7.1f} MB: publish {row['publish']:6.2f} s ({mb / row['publish']:6.1f} MB/s), "
            f"plain download {row['plain']:6.2f} s, publish/plain {ratio:4.2f} (goal <= 1.30) "
            f"{'OK' if ratio <= 1.3 else 'OVER'}; gated no-op {row['noop'] * 1000:6.1f} ms; "
            f"{REFERENCE_S / row['publish']:6.1f}x faster than the 2-minute reference"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
