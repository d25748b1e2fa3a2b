"""The drift statistics and verdicts, against independent references (scipy, plain numpy, hand arithmetic)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import numpy as np
import pytest

from tfship.constants import DriftAction, DriftStatus
from tfship.data.drift import DriftError, DriftPolicy, DriftReport, compare, js_divergence, linf
from tfship.data.profile import BINS, FEATURES, ProfileBuilder, image_features, merge_profiles
from tfship.data.sampledata import Distortion, day_lines
from tfship.errors import ConfigError

D = dt.date(2026, 11, 25)


def test_js_divergence_matches_scipy_and_its_bounds():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(3)
    for _ in range(20):
        p, q = rng.integers(0, 50, BINS), rng.integers(0, 50, BINS)
        assert js_divergence(p.tolist(), q.tolist()) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
    assert js_divergence([5, 0, 0], [10, 0, 0]) == 0.0  # same shares, different counts
    assert js_divergence([1, 0], [0, 1]) == 1.0  # no overlap at all
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4); JS = (log2(4/3) + (log2(2/3) + 1) / 2) / 2
    assert js_divergence([1, 0], [1, 1]) == pytest.approx((np.log2(4 / 3) + (np.log2(2 / 3) + 1) / 2) / 2)
    assert linf([0.1, 0.5, 0.4], [0.1, 0.2, 0.7]) == (pytest.approx(0.3), 1)


def _images(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 784), dtype=np.uint8)


def test_image_features_agree_with_plain_float_formulas():
    images = _images(50)
    images[0] = 0  # a blank image: its centre of mass is the image's centre
    features = image_features(images)
    x = images.astype(np.float64)
    grid = x.reshape(-1, 28, 28)
    with np.errstate(invalid="ignore"):
        centre_x = (grid * np.arange(28)[None, None, :]).sum(axis=(1, 2)) / x.sum(axis=1)
        centre_y = (grid * np.arange(28)[None, :, None]).sum(axis=(1, 2)) / x.sum(axis=1)
    np.testing.assert_allclose(features["mean_brightness"], x.mean(axis=1))
    np.testing.assert_allclose(features["contrast"], x.std(axis=1))
    np.testing.assert_allclose(features["ink_share"], (x > 64).mean(axis=1))
    np.testing.assert_allclose(features["centre_x"][1:], centre_x[1:])
    np.testing.assert_allclose(features["centre_y"][1:], centre_y[1:])
    assert features["centre_x"][0] == features["centre_y"][0] == 13.5


def test_merged_partitions_give_the_whole_days_statistics_whatever_the_grouping():
    images = _images(5000)
    raw = [row.tobytes() for row in images]
    whole = ProfileBuilder()
    whole.add(raw)
    parts = []
    for start in range(0, 5000, 1300):  # the parts of a day, as Spark's partitions hand them back
        builder = ProfileBuilder()
        builder.add(raw[start : start + 1300])
        parts.append(builder.to_dict())
    merged = merge_profiles(parts)
    # Serialised, as the Spark driver collects them: the result is the same in any order.
    assert merge_profiles(json.loads(json.dumps(list(reversed(parts))))) == merged
    x = images.astype(np.float64)
    brightness = merged["features"]["mean_brightness"]
    assert brightness["count"] == 5000 and merged["count"] == 5000
    assert brightness["mean"] == pytest.approx(x.mean(axis=1).mean(), abs=1e-6)
    assert brightness["std"] == pytest.approx(x.mean(axis=1).std(), abs=1e-6)
    assert brightness["min"] == pytest.approx(x.mean(axis=1).min(), abs=1e-6)
    expected, _ = np.histogram(x.mean(axis=1), bins=BINS, range=(0, 255))
    assert brightness["histogram"] == expected.tolist()
    assert set(merged["features"]) == {feature.name for feature in FEATURES}


def test_values_outside_a_features_range_land_in_the_edge_bins():
    builder = ProfileBuilder()
    builder.add([bytes([255]) * 784, bytes([0]) * 784])  # contrast 0; brightness 255 and 0
    histogram = merge_profiles([builder.to_dict()])["features"]["mean_brightness"]["histogram"]
    assert histogram[0] == 1 and histogram[-1] == 1 and sum(histogram) == 2


def _day_stats(day: dt.date, rows: int, distortion: Distortion | None = None) -> dict:
    """What preprocessing writes, computed here straight from the generator's lines (no Spark)."""
    builder = ProfileBuilder()
    labels: Counter[str] = Counter()
    images = []
    for line in day_lines(day, rows, 0.0, distortion)[0]:
        record = json.loads(line)
        images.append(bytes(record["pixels"]))
        labels[str(record["label"])] += 1
    builder.add(images)
    return {
        "dataset": "mnist",
        "day": day.isoformat(),
        "profile": merge_profiles([builder.to_dict()]),
        "label_histogram": {str(k): labels[str(k)] for k in range(10)},
    }


@pytest.fixture(scope="module")
def history() -> dict[str, dict]:
    return {(D - dt.timedelta(days=n)).isoformat(): _day_stats(D - dt.timedelta(days=n), 800) for n in (1, 2)}


def test_a_normal_day_passes_and_each_distortion_is_named(history):
    normal = compare(_day_stats(D, 800), history, DriftPolicy())
    assert normal.status == DriftStatus.PASSED and normal.moved == []
    assert normal.baseline_days == ((D - dt.timedelta(days=2)).isoformat(), (D - dt.timedelta(days=1)).isoformat())
    brighter = compare(_day_stats(D, 800, Distortion(brightness=40)), history, DriftPolicy())
    assert brighter.status == DriftStatus.DRIFTED and "mean_brightness" in brighter.moved
    assert "label" not in brighter.moved
    inverted = compare(_day_stats(D, 800, Distortion(invert=True)), history, DriftPolicy())
    assert {"mean_brightness", "ink_share"} <= set(inverted.moved)
    missing = compare(_day_stats(D, 800, Distortion(missing_class=3)), history, DriftPolicy())
    assert missing.moved == ["label"] and missing.labels.worst_label == "3"
    assert missing.labels.day_shares["3"] == 0.0 and missing.labels.baseline_shares["3"] > 0.05
    assert "label 3:" in missing.summary and "label share L-inf" in missing.summary
    # Thresholds decide: the same brighter day passes under wide limits.
    wide = compare(_day_stats(D, 800, Distortion(brightness=40)), history, DriftPolicy(max_js=1.0))
    assert wide.status == DriftStatus.PASSED


def test_the_first_day_passes_and_says_why_and_the_report_round_trips(history):
    first = compare(_day_stats(D, 300), {}, DriftPolicy(window_days=5))
    assert first.status == DriftStatus.NO_HISTORY and first.features == ()
    assert "first day with no history" in first.summary and "5-day window" in first.summary
    report = compare(_day_stats(D, 800, Distortion(missing_class=3)), history, DriftPolicy(action=DriftAction.FAIL))
    assert report.fails and not report.holds
    data = json.loads(json.dumps(report.to_dict()))
    assert data["moved"] == ["label"] and data["passed"] is False and data["summary"] == report.summary
    assert DriftReport.from_dict(data) == report


def test_days_without_a_profile_are_left_out_and_a_day_without_one_is_refused(history):
    old = {"2026-11-20": {"dataset": "mnist", "day": "2026-11-20", "label_histogram": {}}}
    report = compare(_day_stats(D, 300), old, DriftPolicy())
    assert report.status == DriftStatus.NO_HISTORY and "2026-11-20" in report.unusable_days
    with pytest.raises(DriftError, match="rerun preprocess"):
        compare({"dataset": "mnist", "day": D.isoformat()}, history, DriftPolicy())
    with pytest.raises(ConfigError):
        DriftPolicy(max_js=1.5)
    with pytest.raises(ValueError):
        DriftPolicy(action="ignore")


def test_distortions_do_what_they_say_and_leave_a_normal_day_unchanged():
    plain = [json.loads(line) for line in day_lines(D, 200, 0.0)[0]]
    assert [json.loads(line) for line in day_lines(D, 200, 0.0, Distortion())[0]] == plain
    inverted = [json.loads(line) for line in day_lines(D, 200, 0.0, Distortion(invert=True))[0]]
    assert [row["pixels"] for row in inverted] == [[255 - p for p in row["pixels"]] for row in plain]
    brighter = [json.loads(line) for line in day_lines(D, 200, 0.0, Distortion(brightness=50))[0]]
    assert [row["pixels"] for row in brighter] == [[min(255, p + 50) for p in row["pixels"]] for row in plain]
    missing = [json.loads(line) for line in day_lines(D, 500, 0.0, Distortion(missing_class=7))[0]]
    assert 7 not in {row["label"] for row in missing} and len(missing) == 500
    with pytest.raises(ConfigError):
        Distortion(missing_class=10)
