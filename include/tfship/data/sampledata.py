"""Sample raw data: MNIST-style 28x28 digits made from scikit-learn's bundled 8x8 digits.

Each day is deterministic (seeded by D), holds about 10k rows by default, and can carry a
share of malformed rows of known kinds so the preprocessing's quarantine has work to do. A
`Distortion` makes a day drift on purpose (brighter, inverted, one class missing), so the drift
check is tested on real data.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import io
import json
import posixpath
from dataclasses import dataclass, field

import numpy as np

from tfship.data.schema import NUM_CLASSES
from tfship.days import day_number
from tfship.errors import ConfigError
from tfship.paths import SUCCESS_MARKER, raw_dir
from tfship.storage import Storage

IMAGE_SIDE = 28
PIXELS = IMAGE_SIDE * IMAGE_SIDE
MALFORMED_KINDS = ("wrong_length", "label_out_of_range", "non_numeric_pixel", "broken_json", "duplicate_id")


@functools.lru_cache(maxsize=1)
def _base_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 scikit-learn digits upsampled to 20x20 floats in 0..1 (MNIST's inner box)."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack([zoom(image / 16.0, 2.5, order=1) for image in digits.images])
    return np.clip(images, 0.0, 1.0), digits.target.astype(np.int64)


@dataclass(frozen=True)
class Distortion:
    """Drift made on purpose: every pixel brighter by `brightness` (clipped), images inverted, a class left out."""

    brightness: int = 0
    invert: bool = False
    missing_class: int | None = None

    def __post_init__(self) -> None:
        if not -255 <= self.brightness <= 255:
            raise ConfigError(f"brightness shift {self.brightness} must be within -255..255")
        if self.missing_class is not None and not 0 <= self.missing_class < NUM_CLASSES:
            raise ConfigError(f"missing class {self.missing_class} must be a label 0..{NUM_CLASSES - 1}")

    def to_dict(self) -> dict[str, int | bool]:
        """The options in force (empty for an undistorted day)."""
        options = {"brightness": self.brightness, "invert": self.invert, "missing_class": self.missing_class}
        return {name: value for name, value in options.items() if value not in (0, False, None)}

    def apply(self, images: np.ndarray) -> np.ndarray:
        """The uint8 images inverted (255 - p) and then shifted (clipped to 0..255)."""
        pixels = images.astype(np.int16)
        if self.invert:
            pixels = 255 - pixels
        return np.clip(pixels + self.brightness, 0, 255).astype(np.uint8)


def make_images(
    rng: np.random.Generator, count: int, *, exclude: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """`count` augmented 28x28 uint8 images (random shift, contrast and noise) and labels, none in `exclude`."""
    base, labels = _base_digits()
    # Without exclusions `pool` is 0..len-1 and the draws are exactly those of an undistorted day.
    pool = np.flatnonzero(~np.isin(labels, exclude))
    picks = pool[rng.integers(0, len(pool), size=count)]
    shifts = rng.integers(-3, 4, size=(count, 2))
    contrast = rng.uniform(0.75, 1.0, size=count)
    canvas = np.zeros((count, IMAGE_SIDE, IMAGE_SIDE), dtype=np.float64)
    for row, (pick, (dy, dx)) in enumerate(zip(picks, shifts, strict=True)):
        top, left = 4 + dy, 4 + dx
        canvas[row, top : top + 20, left : left + 20] = base[pick] * contrast[row]
    canvas = canvas * 255.0 + rng.normal(0.0, 8.0, size=canvas.shape)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), labels[picks]


@dataclass
class PartitionSummary:
    """What the generator wrote for one day."""

    day: str
    uri: str
    rows: int
    shards: int
    malformed: dict[str, int] = field(default_factory=dict)
    distortion: dict[str, int | bool] = field(default_factory=dict)

    @property
    def valid_rows(self) -> int:
        """Rows that a correct validator keeps (duplicates count once)."""
        return self.rows - sum(self.malformed.values())


def _malformed_line(kind: str, record: dict, earlier_id: str) -> str:
    if kind == "wrong_length":
        record["pixels"] = record["pixels"][:-3]
    elif kind == "label_out_of_range":
        record["label"] = 10 + record["label"]
    elif kind == "non_numeric_pixel":
        record["pixels"][100] = "x"
    elif kind == "duplicate_id":
        record["id"] = earlier_id
    line = json.dumps(record, separators=(",", ":"))
    if kind == "broken_json":
        line = line[: len(line) // 2]
    return line


def day_lines(
    day: dt.date, rows: int, bad_fraction: float, distortion: Distortion | None = None
) -> tuple[list[str], dict[str, int]]:
    """The day's JSON lines and the count of each malformed kind among them."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError(f"bad_fraction must be in [0, 1), got {bad_fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([day_number(day), 20240611]))
    distortion = distortion or Distortion()
    missing = (distortion.missing_class,) if distortion.missing_class is not None else ()
    images, labels = make_images(rng, rows, exclude=missing)
    images = distortion.apply(images)
    bad_count = round(rows * bad_fraction)
    # Row 0 stays clean so a duplicate always has an earlier clean id to copy.
    bad_rows = set(rng.choice(np.arange(1, rows), size=min(bad_count, rows - 1), replace=False).tolist())
    prefix = day.strftime("%Y%m%d")
    lines: list[str] = []
    counts = dict.fromkeys(MALFORMED_KINDS, 0)
    last_clean_id = ""
    for index in range(rows):
        pixels = images[index].reshape(-1).tolist()
        record = {"id": f"{prefix}-{index:06d}", "label": int(labels[index]), "pixels": pixels}
        if index in bad_rows:
            kind = MALFORMED_KINDS[index % len(MALFORMED_KINDS)]
            counts[kind] += 1
            lines.append(_malformed_line(kind, record, last_clean_id))
        else:
            last_clean_id = record["id"]
            lines.append(json.dumps(record, separators=(",", ":")))
    return lines, counts


def _gzip_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    # mtime=0 and no file name: the same day gives byte-identical files on every run.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=1) as handle:
        handle.write(text.encode("utf-8"))
    return buffer.getvalue()


def write_day(
    storage: Storage,
    day: dt.date,
    *,
    dataset: str = "mnist",
    rows: int = 10_000,
    shards: int = 4,
    bad_fraction: float = 0.01,
    distortion: Distortion | None = None,
) -> PartitionSummary:
    """(Re)write the day's raw partition; `_SUCCESS` goes last so readers never see half a day."""
    if shards <= 0:
        raise ValueError(f"shards must be positive, got {shards}")
    lines, counts = day_lines(day, rows, bad_fraction, distortion)
    directory = raw_dir(dataset, day)
    storage.delete(directory, recursive=True)
    storage.makedirs(directory)
    per_shard = -(-len(lines) // shards)
    for shard in range(shards):
        chunk = lines[shard * per_shard : (shard + 1) * per_shard]
        with storage.open_write(posixpath.join(directory, f"part-{shard:05d}.jsonl.gz")) as handle:
            handle.write(_gzip_bytes("".join(line + "\n" for line in chunk)))
    with storage.open_write(posixpath.join(directory, SUCCESS_MARKER)) as handle:
        handle.write(b"")
    malformed = {kind: count for kind, count in counts.items() if count}
    options = distortion.to_dict() if distortion else {}
    return PartitionSummary(day.isoformat(), storage.uri(directory), rows, shards, malformed, options)
