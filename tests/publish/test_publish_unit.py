"""The publisher without HDFS: gate, versions, pruning, rate limiter, alert payload, file:// source."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from pathlib import Path

import pytest

from harness.fake_candidate import data_file, write_fake_candidate
from tests.publish.helpers import numeric_children, release_lines, source_tree, tree
from tfship.alerts import publish_failure_alert
from tfship.config import StorageConfig
from tfship.release.publish import PublishError, PublishPolicy, publish_candidate
from tfship.release.serving_dir import Publication, ServingDir
from tfship.release.throttle import TokenBucket
from tfship.release.transfer import Source

DAY = dt.date(2026, 3, 1)
FAST = PublishPolicy(backoff_s=0.0)


def _publish(local_storage, candidate: str, target: Path, **kwargs):
    kwargs.setdefault("policy", FAST)
    return publish_candidate(
        Source(StorageConfig(local_storage.root_uri)),
        candidate,
        target,
        host="serve-a",
        run_id="run-1",
        rng=random.Random(1),
        **kwargs,
    )


def _release(version: int, digest: str = "0" * 32) -> Publication:
    return Publication(version, digest, "mnist", "2026-03-01", "r", "h", "e", 0, 0.0, "2026-03-02T00:00:00+00:00")


def test_first_publication_lands_complete_under_the_day_number(local_storage, serving_dir):
    candidate, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=200_000, seed=1)
    result = _publish(local_storage, candidate, serving_dir)
    assert result.version == 2026030100
    assert numeric_children(serving_dir) == ["2026030100"]
    assert tree(serving_dir / "2026030100") == source_tree(local_storage, candidate)
    [line] = release_lines(serving_dir)
    source_manifest = json.loads((Path(local_storage.root) / candidate / "MANIFEST.json").read_text())
    assert (line["version"], line["digest"], line["day"], line["run_id"]) == (
        2026030100,
        source_manifest["digest"],
        "2026-03-01",
        "run-1",
    )
    assert line["bytes"] == sum(
        len(b) for n, b in source_tree(local_storage, candidate).items() if n != "MANIFEST.json"
    )
    assert [p.name for p in serving_dir.iterdir() if p.name.startswith(".staging-")] == []


def test_gate_skips_a_published_digest_without_reading_the_files(local_storage, serving_dir, caplog):
    candidate, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=50_000, seed=2)
    digest = json.loads((Path(local_storage.root) / candidate / "MANIFEST.json").read_text())["digest"]
    serving_dir.mkdir(parents=True)
    (serving_dir / "releases.jsonl").write_text(json.dumps(_release(2026030107, digest).__dict__) + "\n")
    # Without its files the candidate could not be transferred: a no-op must not need them.
    local_storage.delete(f"{candidate}/{data_file()}")
    with caplog.at_level(logging.INFO):
        result = _publish(local_storage, candidate, serving_dir)
    assert result.version == 2026030107
    assert result.transferred is False
    assert numeric_children(serving_dir) == []
    assert len(release_lines(serving_dir)) == 1
    assert "already published as version 2026030107" in caplog.text


def test_rerun_is_a_no_op_and_a_lost_log_line_is_recovered(local_storage, serving_dir, caplog):
    candidate, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=50_000, seed=3)
    _publish(local_storage, candidate, serving_dir)
    with caplog.at_level(logging.INFO):
        again = _publish(local_storage, candidate, serving_dir)
    assert (again.version, again.transferred) == (2026030100, False)
    assert "already published as version 2026030100" in caplog.text
    assert len(release_lines(serving_dir)) == 1
    # A run killed between rename() and the log append: the directory is the proof.
    (serving_dir / "releases.jsonl").unlink()
    recovered = _publish(local_storage, candidate, serving_dir)
    assert (recovered.version, recovered.transferred) == (2026030100, False)
    assert [line["version"] for line in release_lines(serving_dir)] == [2026030100]
    assert numeric_children(serving_dir) == ["2026030100"]


def test_version_allocation_skips_dirs_rejections_and_logged_versions(tmp_path):
    target = tmp_path / "t"
    for name in ("2026030100", "2026030101", "temp-1", ".staging-abc", "2026022899"):
        (target / name).mkdir(parents=True)
    (target / ".rejected" / "2026030102-canary-failed").mkdir(parents=True)
    releases = [_release(2026030103), _release(2026022800)]
    assert ServingDir(target).allocate(DAY, releases) == 2026030104
    assert ServingDir(target).allocate(dt.date(2026, 3, 2), releases) == 2026030200
    assert ServingDir(tmp_path / "absent").allocate(DAY, []) == 2026030100


def test_pruning_keeps_the_newest_k_and_the_new_one(tmp_path):
    target = tmp_path / "t"
    for version in (2026030100, 2026030200, 2026030300, 2026030400, 2026030500):
        (target / str(version)).mkdir(parents=True)
        (target / str(version) / "saved_model.pb").write_bytes(b"x")
    (target / "notes").mkdir()
    assert ServingDir(target).prune(keep=3) == [2026030100, 2026030200]
    assert numeric_children(target) == ["2026030300", "2026030400", "2026030500"]
    # A backfill's older version is kept as well as the newest K.
    (target / "2026020100").mkdir()
    assert ServingDir(target).prune(keep=2, protect=2026020100) == [2026030300]
    assert numeric_children(target) == ["2026020100", "2026030400", "2026030500"]
    assert sorted(p.name for p in target.iterdir()) == ["2026020100", "2026030400", "2026030500", "notes"]


def test_publications_prune_and_clean_stale_staging(local_storage, serving_dir):
    serving_dir.mkdir(parents=True)
    (serving_dir / ".staging-0123abcd").mkdir()
    (serving_dir / ".staging-0123abcd" / "saved_model.pb").write_bytes(b"half")
    versions = []
    for seed in range(4):
        candidate, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=20_000, seed=10 + seed)
        versions.append(_publish(local_storage, candidate, serving_dir, policy=PublishPolicy(keep=2)).version)
    assert versions == [2026030100, 2026030101, 2026030102, 2026030103]
    assert numeric_children(serving_dir) == ["2026030102", "2026030103"]
    assert not (serving_dir / ".staging-0123abcd").exists()
    assert [line["version"] for line in release_lines(serving_dir)] == versions


def test_a_file_differing_from_its_manifest_publishes_nothing(local_storage, serving_dir):
    candidate, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=30_000, seed=4)
    victim = Path(local_storage.root) / candidate / "saved_model.pb"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(PublishError) as caught:
        _publish(local_storage, candidate, serving_dir)
    err = caught.value
    assert (err.check, err.file, err.model, err.day, err.host) == (
        "md5",
        "saved_model.pb",
        "mnist",
        "2026-03-01",
        "serve-a",
    )
    assert err.permanent
    assert "saved_model.pb" in str(err) and "md5" in str(err) and "serve-a" in str(err)
    assert sorted(p.name for p in serving_dir.iterdir()) == [".publish.lock"]


def test_a_missing_listed_file_and_a_wrong_day_are_named(local_storage, serving_dir):
    candidate, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=30_000, seed=5)
    with pytest.raises(PublishError, match=r"day 2026-03-02 but the manifest says 2026-03-01") as wrong_day:
        _publish(local_storage, candidate, serving_dir, day="2026-03-02")
    assert wrong_day.value.check == "day"
    local_storage.delete(f"{candidate}/canary.json")
    with pytest.raises(PublishError, match=r"canary\.json.*listed in the manifest but missing") as missing:
        _publish(local_storage, candidate, serving_dir)
    assert (missing.value.check, missing.value.file) == ("exists", "canary.json")
    assert numeric_children(serving_dir) == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def test_token_bucket_holds_the_rate_and_caps_idle_credit():
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=500, clock=clock, sleep=clock.sleep)
    for _ in range(50):
        bucket.take(100)
    assert clock.slept == pytest.approx(5.0)  # 5000 bytes at 1000 B/s, starting empty
    clock.now += 10.0  # idle: at most the 500-byte burst is credited
    clock.slept = 0.0
    bucket.take(2000)
    assert clock.slept == pytest.approx(1.5)
    unlimited = TokenBucket(0, clock=clock, sleep=clock.sleep)
    clock.slept = 0.0
    unlimited.take(10**9)
    assert clock.slept == 0.0


def test_alert_payload_names_everything():
    err = PublishError(
        "md5",
        "md5 aaa of the bytes read, the manifest lists bbb",
        model="mnist",
        day="2026-03-01",
        host="serve-b",
        endpoint="http://nn2:9870",
        file="variables/variables.data-00000-of-00001",
    )
    payload = publish_failure_alert(err, log_url="http://airflow/dags/d/runs/r/tasks/t?try_number=3", task="d.t")
    json.dumps(payload)  # must be sendable as is
    for value in (
        "mnist",
        "2026-03-01",
        "serve-b",
        "http://nn2:9870",
        "variables/variables.data-00000-of-00001",
        "md5",
    ):
        assert value in payload["text"]
        assert any(value in field["text"] for field in payload["blocks"][1]["fields"])
    assert "http://airflow/dags/d/runs/r/tasks/t?try_number=3" in payload["text"]
    assert "http://airflow/dags/d/runs/r/tasks/t?try_number=3" in json.dumps(payload["blocks"][-1])
    assert "md5 aaa of the bytes read" in payload["blocks"][2]["text"]["text"]


def test_an_older_day_is_not_published_over_a_later_one(local_storage, serving_dir):
    from tfship.release.publish import SupersededError

    later, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=20_000, seed=1)
    older, _ = write_fake_candidate(local_storage, model="mnist", day=DAY - dt.timedelta(days=3), total_bytes=20_000,
                                    seed=2)  # fmt: skip
    assert _publish(local_storage, later, serving_dir).version == 2026030100
    with pytest.raises(SupersededError, match="already holds version 2026030100 of a later day than 2026-02-26"):
        _publish(local_storage, older, serving_dir)
    assert numeric_children(serving_dir) == ["2026030100"]
    assert [line["version"] for line in release_lines(serving_dir)] == [2026030100]
    assert [p.name for p in serving_dir.iterdir() if p.name.startswith(".staging-")] == []
