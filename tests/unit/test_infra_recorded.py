"""A rerun of infra_validate stands on a recorded pass only for the same candidate digest and the same image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfship.release.manifest import manifest_for_directory, write_manifest
from tfship.serving.canary import Check
from tfship.serving.infra_checks import InfraValidationResult, read_result, recorded_pass, write_result
from tfship.storage import LocalStorage

CANDIDATE = "models/mnist/candidates/2026-11-04-0123abcd"
RECORD = "models/mnist/infra_validation/2026-11-04-0123abcd.json"
IMAGE = "tfship/tfserving-standin:abc"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    """A storage root holding one candidate: two files and its manifest."""
    root = tmp_path / CANDIDATE
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables" / "variables.index").write_bytes(b"index")
    storage = LocalStorage(f"file://{tmp_path}")
    write_manifest(storage, CANDIDATE, manifest_for_directory(storage, CANDIDATE, model="mnist", day="2026-11-04"))
    return storage


def _digest(storage: LocalStorage) -> str:
    """The digest as the manifest on disk says it."""
    with storage.open_read(f"{CANDIDATE}/MANIFEST.json") as handle:
        return json.loads(handle.read())["digest"]


def _result(digest: str, *, passed: bool = True, image: str = IMAGE) -> InfraValidationResult:
    checks = (
        Check("stage", True, f"digest {digest}", "every file matches MANIFEST.json"),
        Check("load", passed, "loaded" if passed else "no variables", "loads"),
    )
    return InfraValidationResult(
        model="mnist",
        day="2026-11-04",
        candidate=CANDIDATE,
        digest=digest,
        image=image,
        version=2026110400,
        container="tfship-infra-mnist-2026-11-04-0123abcd",
        checks=checks,
        seconds={"total": 31.5},
        run_id="manual__first",
    )


def test_no_record_means_no_shortcut(storage: LocalStorage) -> None:
    assert read_result(storage, CANDIDATE) is None
    assert recorded_pass(storage, CANDIDATE, image=IMAGE) is None


def test_a_recorded_pass_of_the_same_digest_on_the_same_image_is_returned(storage: LocalStorage) -> None:
    write_result(storage, _result(_digest(storage)))
    found = recorded_pass(storage, CANDIDATE, image=IMAGE)
    assert found is not None
    assert (found.passed, found.run_id, found.digest, found.image) == (True, "manual__first", _digest(storage), IMAGE)
    assert [check.name for check in found.checks] == ["stage", "load"]
    assert found.seconds == {"total": 31.5}


def test_a_recorded_failure_is_tried_again(storage: LocalStorage) -> None:
    write_result(storage, _result(_digest(storage), passed=False))
    assert read_result(storage, CANDIDATE).failed_checks == ["load"]
    assert recorded_pass(storage, CANDIDATE, image=IMAGE) is None


def test_another_image_is_tried_again(storage: LocalStorage) -> None:
    write_result(storage, _result(_digest(storage), image="tensorflow/serving:2.19.0"))
    assert recorded_pass(storage, CANDIDATE, image=IMAGE) is None


def test_a_pass_of_other_content_under_the_same_name_is_tried_again(storage: LocalStorage, tmp_path: Path) -> None:
    write_result(storage, _result(_digest(storage)))
    # The candidate's files and manifest replaced (by hand: names are content-addressed, the pipeline never does this).
    (tmp_path / CANDIDATE / "saved_model.pb").write_bytes(b"another graph")
    write_manifest(storage, CANDIDATE, manifest_for_directory(storage, CANDIDATE, model="mnist", day="2026-11-04"))
    assert recorded_pass(storage, CANDIDATE, image=IMAGE) is None


def test_a_candidate_without_its_manifest_or_an_unreadable_record_is_tried_again(
    storage: LocalStorage, tmp_path: Path
) -> None:
    write_result(storage, _result(_digest(storage)))
    (tmp_path / CANDIDATE / "MANIFEST.json").unlink()
    assert recorded_pass(storage, CANDIDATE, image=IMAGE) is None
    (tmp_path / RECORD).write_text("{not json")
    assert read_result(storage, CANDIDATE) is None
