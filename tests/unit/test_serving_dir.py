"""The serving dir's owner: versions, rejection, the release log and its torn-line rule, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfship.constants import LogEvent
from tfship.release.serving_dir import Publication, ServingDir, ServingDirError


def _publication(version: int, digest: str) -> Publication:
    return Publication(version, digest, "mnist", "2026-03-01", "run", "local", "e", 1, 0.1, "2026-03-02T00:00:00+00:00")


def test_versions_are_the_numeric_directories_only(tmp_path: Path):
    for name in ("2026030100", "00123", ".staging-ab", "temp-1", "v2", "2026030200.tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "2026030300").write_text("a file, not a version")
    assert ServingDir(tmp_path).versions() == [123, 2026030100]
    assert ServingDir(tmp_path).newest() == 2026030100
    assert ServingDir(tmp_path).superseded_by(123) == 2026030100
    assert ServingDir(tmp_path).superseded_by(2026030100) is None
    assert ServingDir(tmp_path / "absent").versions() == []


def test_rejected_versions_keep_their_numbers_and_never_collide(tmp_path: Path):
    serving = ServingDir(tmp_path)
    for _ in range(2):
        (tmp_path / "2026030100").mkdir()
        serving.reject(2026030100)
    assert sorted(p.name for p in (tmp_path / ".rejected").iterdir()) == ["2026030100", "2026030100-1"]
    assert serving.rejected_versions() == [2026030100, 2026030100]
    with pytest.raises(ServingDirError, match="2026030100 does not exist"):
        serving.reject(2026030100)


def test_the_release_log_survives_a_torn_line(tmp_path: Path):
    log = ServingDir(tmp_path).log
    log.record_publication(_publication(2026030100, "a" * 32))
    with open(log.path, "ab") as handle:  # a writer killed mid-append
        handle.write(b'{"version": 2026030101, "dig')
    log.record_event(LogEvent.CANARY, {"run_id": "r1", "version": 2026030100, "passed": True})
    lines = log.path.read_text().splitlines()
    assert len(lines) == 3 and lines[1].startswith('{"version": 2026030101, "dig')
    assert json.loads(lines[2])["event"] == "canary"
    assert [p.version for p in log.publications()] == [2026030100]
    assert log.published_version("a" * 32) == 2026030100 and log.published_version("b" * 32) is None
    assert log.last_event(LogEvent.CANARY, run_id="r1", version=2026030100) == {
        "run_id": "r1",
        "version": 2026030100,
        "passed": True,
    }
    assert log.last_event(LogEvent.ROLLBACK, run_id="r1") is None


def test_a_version_directory_is_found_by_its_manifest_digest(tmp_path: Path):
    (tmp_path / "2026030100").mkdir()
    (tmp_path / "2026030100" / "MANIFEST.json").write_text(json.dumps({"digest": "d" * 32}))
    (tmp_path / "2026030101").mkdir()  # no manifest: not it
    assert ServingDir(tmp_path).holding("d" * 32) == 2026030100
    assert ServingDir(tmp_path).holding("e" * 32) is None
