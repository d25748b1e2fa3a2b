"""A day's profile: derived per-image features with fixed-bin histograms, for the drift check.

Computed in the Spark pass while each partition already holds its rows (no second read): every
surviving image gives a few numbers (brightness, contrast, ink share, centre of mass), each
partition sums them (count, sum, sum of squares, min, max, histogram counts), and the driver
merges the partitions into the `profile` section of `_stats.json`. Bins are fixed per feature
(the same edges every day), so any two days compare bin by bin. The label distribution is
`label_histogram`, already in `_stats.json`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tfship.data.schema import IMAGE_BYTES, IMAGE_SIDE

PROFILE_VERSION = 1
BINS = 32
INK_LEVEL = 64  # a pixel above a quarter of full scale is ink; the sample's background noise stays below
_CHUNK = 2048  # images converted to floats at once: a few MB whatever the partition's size
_CENTRE = (IMAGE_SIDE - 1) / 2  # the centre of mass of a blank image


@dataclass(frozen=True)
class Feature:
    """One derived numeric feature and its fixed histogram range (values outside go to the edge bins)."""

    name: str
    low: float
    high: float
    description: str


FEATURES = (
    Feature("mean_brightness", 0.0, 255.0, "mean pixel value"),
    Feature("contrast", 0.0, 128.0, "standard deviation of the pixel values"),
    Feature("ink_share", 0.0, 1.0, f"share of pixels above {INK_LEVEL}"),
    Feature("centre_x", 0.0, IMAGE_SIDE - 1.0, "column of the centre of mass"),
    Feature("centre_y", 0.0, IMAGE_SIDE - 1.0, "row of the centre of mass"),
)
FEATURE_NAMES = tuple(feature.name for feature in FEATURES)


def image_features(images: Any) -> dict[str, Any]:
    """Per-image features of a (n, 784) uint8 array: {name: float64 array of n}.

    Integer sums first (exact, and some 3x faster than float arithmetic over every pixel).
    """
    import numpy as np

    pixels = images.astype(np.int32)
    total = pixels.sum(axis=1)
    squares = np.einsum("ij,ij->i", pixels, pixels)
    grid = pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    positions = np.arange(IMAGE_SIDE)
    mass_x = grid.sum(axis=1) @ positions  # column index weighted by the ink in that column
    mass_y = grid.sum(axis=2) @ positions
    mean = total / IMAGE_BYTES
    blank = total == 0
    safe = np.where(blank, 1, total)
    return {
        "mean_brightness": mean,
        "contrast": np.sqrt(np.maximum(0.0, squares / IMAGE_BYTES - mean * mean)),
        "ink_share": np.count_nonzero(images > INK_LEVEL, axis=1) / IMAGE_BYTES,
        "centre_x": np.where(blank, _CENTRE, mass_x / safe),
        "centre_y": np.where(blank, _CENTRE, mass_y / safe),
    }


def bin_counts(values: Any, feature: Feature) -> Any:
    """Counts per fixed bin: BINS equal bins over [low, high], values outside counted in the edge bins."""
    import numpy as np

    width = (feature.high - feature.low) / BINS
    index = np.floor((values - feature.low) / width).astype(np.int64)
    return np.bincount(np.clip(index, 0, BINS - 1), minlength=BINS)


class ProfileBuilder:
    """Sums of the derived features over the images one output part writes (JSON out)."""

    def __init__(self) -> None:
        self.count = 0
        # One partial sum per chunk of a part: the chunks are the same whichever Spark partition holds the
        # part, so `math.fsum` over all partials gives the same total however Spark groups the parts.
        self.sums: dict[str, list[float]] = {name: [] for name in FEATURE_NAMES}
        self.squares: dict[str, list[float]] = {name: [] for name in FEATURE_NAMES}
        self.lows = dict.fromkeys(FEATURE_NAMES, math.inf)
        self.highs = dict.fromkeys(FEATURE_NAMES, -math.inf)
        self.histograms = {name: [0] * BINS for name in FEATURE_NAMES}
        self._pending: list[bytes] = []

    def add(self, images: Sequence[bytes]) -> None:
        """Account for a part's raw 784-byte images, in a fixed order (by id), so reruns sum the same chunks.

        Images may come in any number of calls: they are buffered into chunks of _CHUNK counted
        from the part's first image, so the partial sums do not depend on how a caller batches.
        """
        self._pending.extend(images)
        while len(self._pending) >= _CHUNK:
            self._account(self._pending[:_CHUNK])
            del self._pending[:_CHUNK]

    def _account(self, images: Sequence[bytes]) -> None:
        import numpy as np

        chunk = np.frombuffer(b"".join(images), dtype=np.uint8).reshape(-1, IMAGE_BYTES)
        self.count += len(chunk)
        values = image_features(chunk)
        for feature in FEATURES:
            column = values[feature.name]
            self.sums[feature.name].append(float(column.sum()))
            self.squares[feature.name].append(float(np.square(column).sum()))
            self.lows[feature.name] = min(self.lows[feature.name], float(column.min()))
            self.highs[feature.name] = max(self.highs[feature.name], float(column.max()))
            histogram = self.histograms[feature.name]
            for index, count in enumerate(bin_counts(column, feature).tolist()):
                histogram[index] += count

    def to_dict(self) -> dict[str, Any]:
        """One part's sums (merged by `merge_profiles`); ends the part: a partial last chunk is counted."""
        if self._pending:
            self._account(self._pending)
            self._pending = []
        return {
            "count": self.count,
            "features": {
                name: {
                    "sum": self.sums[name],
                    "sum_sq": self.squares[name],
                    "min": self.lows[name] if self.count else None,
                    "max": self.highs[name] if self.count else None,
                    "histogram": self.histograms[name],
                }
                for name in FEATURE_NAMES
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def merge_profiles(parts: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """The `profile` section of `_stats.json` from the partitions' sums.

    `math.fsum` adds the chunks' partial sums exactly, so the result depends neither on the order
    Spark returns the partitions in nor on how it grouped the parts: a rerun writes the same bytes.
    """
    present = [part for part in parts if part]
    count = sum(int(part["count"]) for part in present)
    features: dict[str, Any] = {}
    for feature in FEATURES:
        entries = [part["features"][feature.name] for part in present if part["count"]]
        total = math.fsum(value for entry in entries for value in entry["sum"])
        squares = math.fsum(value for entry in entries for value in entry["sum_sq"])
        mean = total / count if count else None
        std = math.sqrt(max(0.0, squares / count - mean * mean)) if count and mean is not None else None
        histogram = [sum(entry["histogram"][index] for entry in entries) for index in range(BINS)]
        features[feature.name] = {
            "count": count,
            "mean": _round(mean),
            "std": _round(std),
            "min": _round(min((entry["min"] for entry in entries), default=None)),
            "max": _round(max((entry["max"] for entry in entries), default=None)),
            "range": [feature.low, feature.high],
            "histogram": histogram,
        }
    return {"version": PROFILE_VERSION, "bins": BINS, "ink_level": INK_LEVEL, "count": count, "features": features}


def pool_profiles(profiles: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several days' profiles as one (the drift baseline): histograms added, mean and std pooled exactly."""
    count = sum(int(profile["count"]) for profile in profiles)
    features: dict[str, Any] = {}
    for feature in FEATURES:
        entries = [profile["features"][feature.name] for profile in profiles if profile["count"]]
        mean = math.fsum(e["count"] * e["mean"] for e in entries) / count if count else None
        second = math.fsum(e["count"] * (e["std"] ** 2 + e["mean"] ** 2) for e in entries) / count if count else None
        std = math.sqrt(max(0.0, second - mean * mean)) if mean is not None and second is not None else None
        features[feature.name] = {
            "count": count,
            "mean": _round(mean),
            "std": _round(std),
            "min": min((e["min"] for e in entries if e["min"] is not None), default=None),
            "max": max((e["max"] for e in entries if e["max"] is not None), default=None),
            "range": [feature.low, feature.high],
            "histogram": [sum(e["histogram"][index] for e in entries) for index in range(BINS)],
        }
    return {"version": PROFILE_VERSION, "bins": BINS, "ink_level": INK_LEVEL, "count": count, "features": features}
