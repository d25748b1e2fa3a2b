"""Publication at model scale on a real HDFS (MiniDFSCluster, WebHDFS on loopback): four tables.

1. Speed: 500 MB and 2 GB models in 8 and 64 files. Publication (md5, fsync, rename, log) against
   a plain `hdfs.InsecureClient.download` of the same files, and against that download followed
   by an fsync of every file and directory (the disk's own cost of durability). Goal: publication
   within 1.1x of download + fsync.
2. Memory: peak RSS of `python -m jobs.publish` at 50 MB, 500 MB and 2 GB. Goal: flat.
3. Rate limit: 4 parallel streams under one limit for about 30 s. Goal: within 10% of the limit.
4. A connection cut at half of a 500 MB file (a loopback proxy): the time to finish when the read
   resumes at the byte reached, against when the file starts over.
Every number is measured in the same run; `--quick` shrinks the sizes for a smoke run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import posixpath
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# harness/ sits at the project root, which `python bench/publish.py` does not put on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.cutting_proxy import CuttingProxy
from harness.fake_candidate import data_file, write_fake_candidate
from harness.hdfs import MiniHdfs
from tfship.config import StorageConfig
from tfship.release.publish import PublishPolicy, publish_candidate
from tfship.release.transfer import Source
from tfship.storage import WebHdfsStorage, fsync_dir, fsync_file

USER = "root"
MB = 1_000_000
DAY = dt.date(2026, 6, 1)


def _candidate(cluster: MiniHdfs, label: str, size: int, files: int, seed: int):
    root = f"{cluster.rpc_uri}/bench/{label}"
    storage = WebHdfsStorage(root, [cluster.webhdfs_url], USER)
    storage.delete("", recursive=True)
    # 7 small files come with every model: the variables take the other files.
    candidate, manifest = write_fake_candidate(
        storage, model="mnist", day=DAY, total_bytes=size, seed=seed, shards=max(1, files - 7)
    )
    return storage, root, candidate, manifest


def _download(webhdfs_url: str, hdfs_dir: str, local_dir: Path, files: list[str], *, durable: bool) -> float:
    """A user's own copy: InsecureClient.download of each file; with `durable`, then fsync of files and dirs."""
    from hdfs import InsecureClient

    client = InsecureClient(webhdfs_url, user=USER)
    started = time.perf_counter()
    for name in files:
        destination = local_dir / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        client.download(posixpath.join(hdfs_dir, name), str(destination), overwrite=True)
    if durable:
        for name in files:
            fsync_file(local_dir / name)
        for directory, _subdirs, _files in os.walk(local_dir, topdown=False):
            fsync_dir(Path(directory))
    return time.perf_counter() - started


def speed(cluster: MiniHdfs, work: Path, size: int, files: int, seed: int) -> dict[str, float]:
    """Best of two runs each, alternated so page-cache warmth is shared fairly."""
    storage, root, candidate, manifest = _candidate(cluster, f"speed-{seed}", size, files, seed)
    source = Source(StorageConfig(root, (cluster.webhdfs_url,), USER))
    names = [entry.path for entry in manifest.files] + ["MANIFEST.json"]
    hdfs_dir = posixpath.join(storage.root, candidate)
    plain_dir, serving_dir = work / "plain", work / "serving"
    plain, durable, publish = [], [], []
    policy = PublishPolicy(space_margin_bytes=0)
    for attempt in range(2):
        shutil.rmtree(plain_dir, ignore_errors=True)
        plain.append(_download(cluster.webhdfs_url, hdfs_dir, plain_dir, names, durable=False))
        shutil.rmtree(plain_dir, ignore_errors=True)
        durable.append(_download(cluster.webhdfs_url, hdfs_dir, plain_dir, names, durable=True))
        shutil.rmtree(plain_dir, ignore_errors=True)
        shutil.rmtree(serving_dir, ignore_errors=True)
        started = time.perf_counter()
        publish_candidate(
            source, candidate, serving_dir, host="bench", run_id=f"bench-{attempt}", policy=policy, rng=random.Random(0)
        )
        publish.append(time.perf_counter() - started)
    started = time.perf_counter()
    assert not publish_candidate(source, candidate, serving_dir, host="bench", run_id="noop", policy=policy).transferred
    noop = time.perf_counter() - started
    shutil.rmtree(serving_dir, ignore_errors=True)
    storage.delete("", recursive=True)
    return {
        "bytes": manifest.total_bytes,
        "plain": min(plain),
        "durable": min(durable),
        "publish": min(publish),
        "noop": noop,
    }


def peak_rss(cluster: MiniHdfs, work: Path, size: int, seed: int) -> float:
    """Peak RSS (MB) of one `jobs.publish` process publishing a model of `size` bytes."""
    storage, root, candidate, _ = _candidate(cluster, f"rss-{seed}", size, 8, seed)
    serving_dir = work / "rss-serving"
    command = [
        sys.executable,
        "-m",
        "jobs.publish",
        "--candidate",
        candidate,
        "--serving-dir",
        str(serving_dir),
        "--source-root",
        root,
        "--webhdfs-endpoints",
        cluster.webhdfs_url,
        "--hdfs-user",
        USER,
        "--space-margin-bytes",
        "0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"jobs.publish failed: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    shutil.rmtree(serving_dir, ignore_errors=True)
    storage.delete("", recursive=True)
    return usage.ru_maxrss / 1024  # KiB on Linux


def rate_limit(cluster: MiniHdfs, work: Path, limit: int, seconds: float, seed: int) -> tuple[float, float]:
    """(achieved B/s, elapsed s) of a 4-stream publication sized for `seconds` at `limit`."""
    storage, root, candidate, manifest = _candidate(cluster, "rate", int(limit * seconds), 16, seed)
    serving_dir = work / "rate-serving"
    policy = PublishPolicy(rate_limit_bps=limit, streams=4, space_margin_bytes=0)
    started = time.perf_counter()
    publish_candidate(
        Source(StorageConfig(root, (cluster.webhdfs_url,), USER)),
        candidate,
        serving_dir,
        host="bench",
        run_id="rate",
        policy=policy,
    )
    elapsed = time.perf_counter() - started
    shutil.rmtree(serving_dir, ignore_errors=True)
    storage.delete("", recursive=True)
    return manifest.total_bytes / elapsed, elapsed


def fault(cluster: MiniHdfs, work: Path, size: int, seed: int) -> dict[str, float]:
    """Seconds to publish a one-shard model whose big file is cut at half, resuming vs starting over."""
    storage, root, candidate, manifest = _candidate(cluster, "fault", size, 8, seed)
    big = next(entry.size for entry in manifest.files if entry.path == data_file())
    times = {}
    for resume in (True, False):
        serving_dir = work / f"fault-{resume}"
        with CuttingProxy(cluster.webhdfs_url, cut_suffix=data_file(), cut_after=big // 2) as proxy:
            policy = PublishPolicy(resume=resume, backoff_s=0.0, space_margin_bytes=0)
            started = time.perf_counter()
            publish_candidate(
                Source(StorageConfig(root, (proxy.url,), USER)),
                candidate,
                serving_dir,
                host="bench",
                run_id="fault",
                policy=policy,
            )
            times["resume" if resume else "restart"] = time.perf_counter() - started
        shutil.rmtree(serving_dir, ignore_errors=True)
    storage.delete("", recursive=True)
    return times


def main(argv: list[str]) -> int:
    """Start a MiniDFSCluster, print the four tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every table")
    parser.add_argument("--rate-mb", type=float, default=20.0, help="the rate limit of table 3 (MB/s)")
    args = parser.parse_args(argv)
    scale = 0.02 if args.quick else 1.0
    sizes = [int(500 * MB * scale), int(2000 * MB * scale)]
    with tempfile.TemporaryDirectory(prefix="tfship-bench-") as tmp:
        work = Path(tmp)
        cluster = MiniHdfs(work / "hdfs")
        cluster.start()
        try:
            print(f"publication bench on a MiniDFSCluster (WebHDFS on loopback), {os.cpu_count()} CPUs", flush=True)
            print("\n1. speed          size    files  plain s  +fsync s  publish s  publish/plain  publish/(+fsync)")
            for seed, (size, files) in enumerate(((s, f) for s in sizes for f in (8, 64)), start=1):
                row = speed(cluster, work, size, files, seed)
                ratio = row["publish"] / row["durable"]
                print(
                    f"   {row['bytes'] / MB:10.0f} MB  {files:5d}  {row['plain']:7.2f}  {row['durable']:8.2f}  "
                    f"{row['publish']:9.2f}  {row['publish'] / row['plain']:13.2f}  {ratio:10.2f} "
                    f"(goal <= 1.10) {'OK' if ratio <= 1.1 else 'OVER'}; gated no-op {row['noop'] * 1000:.0f} ms",
                    flush=True,
                )
            print("\n2. peak RSS of jobs.publish")
            rss_sizes = [int(50 * MB * scale), *sizes]
            rss = [(size, peak_rss(cluster, work, size, 10 + i)) for i, size in enumerate(rss_sizes)]
            for size, peak in rss:
                print(f"   {size / MB:10.0f} MB model: {peak:7.1f} MB peak RSS ({peak / rss[0][1]:.2f}x the smallest)")
            limit = int(args.rate_mb * MB)
            achieved, elapsed = rate_limit(cluster, work, limit, 30 * (0.2 if args.quick else 1.0), 20)
            error = achieved / limit - 1
            print(
                f"\n3. rate limit, 4 streams: {achieved / MB:.2f} MB/s against {limit / MB:.2f} MB/s over "
                f"{elapsed:.1f} s: {error:+.1%} (goal within 10%) {'OK' if abs(error) <= 0.1 else 'OVER'}"
            )
            times = fault(cluster, work, sizes[0], 30)
            print(
                f"\n4. cut at half of a {sizes[0] / MB:.0f} MB model's big file: resume {times['resume']:.2f} s, "
                f"start over {times['restart']:.2f} s: resume/restart {times['resume'] / times['restart']:.2f}"
            )
            print(json.dumps({"rss_mb": [round(p, 1) for _, p in rss], "fault_s": times}))
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
