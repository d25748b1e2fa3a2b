"""Drift statistics from the real Spark job on generated days, and the drift check on them (real data)."""

from __future__ import annotations

import datetime as dt
import posixpath

import numpy as np
import pytest

from tests.integration.test_preprocess import read_records
from tfship.constants import DriftAction, DriftStatus
from tfship.data.datasets import dataset_spec
from tfship.data.drift import DriftPolicy, check_drift
from tfship.data.preprocess import preprocess_day
from tfship.data.profile import BINS, FEATURES
from tfship.data.sampledata import Distortion, write_day
from tfship.data.stats import read_stats

pytestmark = pytest.mark.spark
D = dt.date(2026, 11, 4)
HISTORY = [D - dt.timedelta(days=n) for n in (3, 2, 1)]


def _day(spark, storage, day: dt.date, rows: int = 1200, distortion: Distortion | None = None) -> dict:
    write_day(storage, day, rows=rows, shards=2, bad_fraction=0.02, distortion=distortion)
    return preprocess_day(spark, storage, spec=dataset_spec("mnist"), day=day)


def test_the_profile_describes_exactly_the_rows_written_and_a_rerun_writes_the_same_bytes(spark, local_storage):
    stats = _day(spark, local_storage, D, rows=1500)
    # The reference reads the TFRecords back with TensorFlow and uses plain float formulas.
    images = []
    for shard in stats["shards"]:
        for example in read_records(local_storage, posixpath.join("features/mnist/dt=2026-11-04", shard["path"])):
            images.append(np.frombuffer(example.features.feature["image"].bytes_list.value[0], np.uint8))
    x = np.stack(images).astype(np.float64)
    grid = x.reshape(-1, 28, 28)
    reference = {
        "mean_brightness": x.mean(axis=1),
        "contrast": x.std(axis=1),
        "ink_share": (x > 64).mean(axis=1),
        "centre_x": (grid * np.arange(28)[None, None, :]).sum(axis=(1, 2)) / x.sum(axis=1),
        "centre_y": (grid * np.arange(28)[None, :, None]).sum(axis=(1, 2)) / x.sum(axis=1),
    }
    profile = stats["profile"]
    assert profile["count"] == len(images) == sum(stats["rows_written"].values())
    for feature in FEATURES:
        values, entry = reference[feature.name], profile["features"][feature.name]
        assert entry["count"] == len(values)
        assert entry["mean"] == pytest.approx(values.mean(), abs=1e-5), feature.name
        assert entry["std"] == pytest.approx(values.std(), abs=1e-5), feature.name
        assert entry["min"] == pytest.approx(values.min(), abs=1e-6)
        assert entry["max"] == pytest.approx(values.max(), abs=1e-6)
        expected, _ = np.histogram(np.clip(values, feature.low, feature.high), BINS, (feature.low, feature.high))
        assert entry["histogram"] == expected.tolist(), feature.name
    with local_storage.open_read("features/mnist/dt=2026-11-04/_stats.json") as handle:
        first = handle.read()
    preprocess_day(spark, local_storage, spec=dataset_spec("mnist"), day=D)
    with local_storage.open_read("features/mnist/dt=2026-11-04/_stats.json") as handle:
        assert handle.read() == first


@pytest.fixture(scope="module")
def history_root(spark, tmp_path_factory):
    """Three normal days before D, preprocessed once for the module."""
    from tfship.storage import LocalStorage

    storage = LocalStorage(f"file://{tmp_path_factory.mktemp('drift-history')}")
    for day in HISTORY:
        _day(spark, storage, day)
    return storage


@pytest.mark.parametrize(
    ("distortion", "moved"),
    [
        (None, []),
        (Distortion(brightness=40), ["mean_brightness"]),
        (Distortion(invert=True), ["mean_brightness", "ink_share"]),
        (Distortion(missing_class=3), ["label"]),
    ],
    ids=["normal", "brighter", "inverted", "class-3-missing"],
)
def test_a_normal_day_passes_and_each_drifted_day_is_caught_and_named(spark, history_root, distortion, moved):
    _day(spark, history_root, D, distortion=distortion)
    report = check_drift(history_root, "mnist", D, DriftPolicy())
    assert report.baseline_days == tuple(day.isoformat() for day in HISTORY)
    assert report.status == (DriftStatus.DRIFTED if moved else DriftStatus.PASSED), report.render()
    assert set(moved) <= set(report.moved), report.render()
    if moved == ["label"]:
        assert report.moved == ["label"] and report.labels.worst_label == "3"
        assert report.labels.day_shares["3"] == 0.0 and "label 3:" in report.summary
    for name in moved:
        assert name.replace("label", "label share") in report.summary
    # The Params decide: limits of 1 let any of these days through, a limit of 0 stops even a normal one.
    assert check_drift(history_root, "mnist", D, DriftPolicy(max_js=1.0, max_label_linf=1.0)).passed
    strict = check_drift(history_root, "mnist", D, DriftPolicy(max_js=0.0, action=DriftAction.FAIL))
    assert strict.fails and "mean_brightness" in strict.moved


def test_the_window_decides_the_baseline_and_no_history_passes_saying_why(spark, history_root):
    _day(spark, history_root, D)
    one = check_drift(history_root, "mnist", D, DriftPolicy(window_days=1))
    assert one.baseline_days == (HISTORY[-1].isoformat(),)
    later = D + dt.timedelta(days=10)
    _day(spark, history_root, later, rows=600)
    alone = check_drift(history_root, "mnist", later, DriftPolicy(window_days=5))
    assert alone.status == DriftStatus.NO_HISTORY and alone.passed
    assert "first day with no history" in alone.summary
    assert sorted(alone.unusable_days) == [(later - dt.timedelta(days=n)).isoformat() for n in range(5, 0, -1)]
    assert read_stats(history_root, "mnist", later)["profile"]["count"] > 0
