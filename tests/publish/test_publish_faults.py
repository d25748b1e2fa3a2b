"""Fault tests of the publisher against the real HDFS (MiniDFSCluster over WebHDFS)."""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.fake_candidate import data_file, write_fake_candidate
from tests.publish.helpers import numeric_children, release_lines, source_tree, tree
from tfship.config import StorageConfig
from tfship.release.publish import PublishError, PublishPolicy, publish_candidate
from tfship.release.transfer import Source

pytestmark = pytest.mark.hdfs

DAY = dt.date(2026, 4, 2)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _source(storage, endpoints, **kwargs) -> Source:
    return Source(StorageConfig(storage.root_uri, tuple(endpoints), "root"), **kwargs)


def _seed_putting_first(endpoints: list[str], first: str) -> int:
    """A seed whose shuffle of `endpoints` starts with `first` (found with the stdlib alone)."""
    for seed in range(1000):
        order = list(endpoints)
        random.Random(seed).shuffle(order)
        if order[0] == first:
            return seed
    raise AssertionError("no seed found")


def test_a_dead_endpoint_first_fails_over_and_publishes(hdfs_storage, hdfs_cluster, dead_endpoint, serving_dir):
    candidate, _ = write_fake_candidate(hdfs_storage, model="mnist", day=DAY, total_bytes=300_000, seed=21)
    endpoints = [dead_endpoint, hdfs_cluster.webhdfs_url]
    seed = _seed_putting_first(endpoints, dead_endpoint)
    result = publish_candidate(
        _source(hdfs_storage, endpoints, connect_timeout_s=2.0),
        candidate,
        serving_dir,
        host="serve-a",
        run_id="failover",
        rng=random.Random(seed),
        policy=PublishPolicy(backoff_s=0.05),
    )
    assert result.version == 2026040200
    assert tree(serving_dir / "2026040200") == source_tree(hdfs_storage, candidate)
    [line] = release_lines(serving_dir)
    assert line["endpoint"] == hdfs_cluster.webhdfs_url


def _job(hdfs_storage, hdfs_cluster, candidate: str, target: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "jobs.publish", "--candidate", candidate, "--serving-dir", str(target),
        "--source-root", hdfs_storage.root_uri, "--webhdfs-endpoints", hdfs_cluster.webhdfs_url,
        "--hdfs-user", "root", "--host", "serve-a", "--backoff-s", "0.1", *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _staged_bytes(target: Path) -> int:
    if not target.is_dir():
        return 0
    return sum(p.stat().st_size for s in target.glob(".staging-*") for p in s.rglob("*") if p.is_file())


def _complete(version_dir: Path, expected_sizes: dict[str, int]) -> bool:
    try:
        found = {str(p.relative_to(version_dir)): p.stat().st_size for p in version_dir.rglob("*") if p.is_file()}
    except FileNotFoundError:  # pruned while we looked
        return True
    return found == expected_sizes


def test_sigkill_mid_download_then_rerun_converges(hdfs_storage, hdfs_cluster, serving_dir):
    candidate, _ = write_fake_candidate(hdfs_storage, model="mnist", day=DAY, total_bytes=3_000_000, seed=22)
    expected = {name: len(data) for name, data in source_tree(hdfs_storage, candidate).items()}

    killed = _job(hdfs_storage, hdfs_cluster, candidate, serving_dir, "--rate-limit-bps", "1000000", "--run-id", "one")
    seen_numeric: set[str] = set()
    while _staged_bytes(serving_dir) < 600_000:
        seen_numeric.update(numeric_children(serving_dir))
        assert killed.poll() is None, f"the job ended before it was killed: {killed.communicate()}"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    seen_numeric.update(numeric_children(serving_dir))
    assert seen_numeric == set()
    assert list(serving_dir.glob(".staging-*")), "the kill should leave a partial staging directory behind"

    rerun = _job(hdfs_storage, hdfs_cluster, candidate, serving_dir, "--run-id", "two")
    incomplete_views = []
    while rerun.poll() is None:
        for name in numeric_children(serving_dir):
            if not _complete(serving_dir / name, expected):
                incomplete_views.append(name)
        time.sleep(0.005)
    out, err = rerun.communicate()
    assert rerun.returncode == 0, err
    assert incomplete_views == []
    assert numeric_children(serving_dir) == ["2026040200"]
    assert tree(serving_dir / "2026040200") == source_tree(hdfs_storage, candidate)
    assert list(serving_dir.glob(".staging-*")) == []
    assert [(line["version"], line["run_id"]) for line in release_lines(serving_dir)] == [(2026040200, "two")]

    third = _job(hdfs_storage, hdfs_cluster, candidate, serving_dir, "--run-id", "three")
    out, err = third.communicate()
    assert third.returncode == 0, err
    assert "already published as version 2026040200" in err
    assert json.loads(out.split("TFSHIP_PUBLISH ", 1)[1])["version"] == 2026040200
    assert len(release_lines(serving_dir)) == 1


def _fake_ti(task_id: str) -> SimpleNamespace:
    return SimpleNamespace(
        dag_id="tfship_daily",
        task_id=task_id,
        map_index=1,
        try_number=4,
        log_url=f"http://localhost:8080/dags/tfship_daily/runs/r/tasks/{task_id}/mapped/1?try_number=4",
    )


def test_one_corrupted_byte_on_hdfs_publishes_nothing_and_alerts(hdfs_storage, hdfs_cluster, serving_dir, webhook):
    from tfship_airflow.alerts import alert_on_failure

    candidate, _ = write_fake_candidate(hdfs_storage, model="mnist", day=DAY, total_bytes=400_000, seed=23)
    victim = f"{candidate}/{data_file()}"
    with hdfs_storage.open_read(victim) as handle:
        data = bytearray(handle.read())
    data[len(data) // 2] ^= 0x01
    with hdfs_storage.open_write(victim) as handle:
        handle.write(bytes(data))

    with pytest.raises(PublishError) as caught:
        publish_candidate(
            _source(hdfs_storage, [hdfs_cluster.webhdfs_url]), candidate, serving_dir,
            host="serve-b", run_id="corrupt", policy=PublishPolicy(backoff_s=0.05),
        )  # fmt: skip
    assert (caught.value.check, caught.value.file) == ("md5", data_file())
    assert numeric_children(serving_dir) == []
    assert list(serving_dir.glob(".staging-*")) == []
    assert release_lines(serving_dir) == []

    alert_on_failure({"ti": _fake_ti("publish_model"), "exception": caught.value})
    [body] = webhook.wait_for(1)
    for expected in ("mnist", "2026-04-02", "serve-b", hdfs_cluster.webhdfs_url, data_file(), "md5"):
        assert expected in body["text"]
    assert "tasks/publish_model/mapped/1?try_number=4" in body["text"]
    assert body["blocks"]


def test_a_stalled_endpoint_times_out_retries_then_alerts(hdfs_storage, stalled_server, serving_dir, webhook):
    from tfship_airflow.alerts import alert_on_failure

    candidate, _ = write_fake_candidate(hdfs_storage, model="mnist", day=DAY, total_bytes=20_000, seed=24)
    with pytest.raises(PublishError) as caught:
        publish_candidate(
            _source(hdfs_storage, [stalled_server.url], connect_timeout_s=1.0, read_timeout_s=0.5),
            candidate,
            serving_dir,
            host="serve-c",
            run_id="stall",
            policy=PublishPolicy(file_attempts=2, backoff_s=0.05),
        )
    err = caught.value
    assert (err.check, err.endpoint, err.file) == ("timeout", stalled_server.url, "MANIFEST.json")
    assert "gave up after 2 attempts" in str(err)
    assert len(stalled_server.accepted) == 2  # one connection per try: it did retry
    assert numeric_children(serving_dir) == []

    alert_on_failure({"ti": _fake_ti("publish_model"), "exception": err})
    [body] = webhook.wait_for(1)
    assert "timeout" in body["text"] and stalled_server.url in body["text"] and "serve-c" in body["text"]


def test_rate_limit_holds_within_ten_percent(hdfs_storage, hdfs_cluster, serving_dir):
    limit = 3_000_000
    candidate, _ = write_fake_candidate(hdfs_storage, model="mnist", day=DAY, total_bytes=6_000_000, seed=25)
    model_bytes = sum(len(b) for n, b in source_tree(hdfs_storage, candidate).items() if n != "MANIFEST.json")
    started = time.monotonic()
    publish_candidate(
        _source(hdfs_storage, [hdfs_cluster.webhdfs_url]), candidate, serving_dir,
        host="serve-a", run_id="rate", policy=PublishPolicy(rate_limit_bps=limit),
    )  # fmt: skip
    throughput = model_bytes / (time.monotonic() - started)
    assert 0.9 * limit <= throughput <= 1.1 * limit, f"{throughput:.0f} B/s against a limit of {limit} B/s"
