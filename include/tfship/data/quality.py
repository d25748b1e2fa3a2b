"""The row rules of the raw data: what a valid line is, and the reason code of every invalid one."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tfship.data.schema import IMAGE_BYTES, NUM_CLASSES

REASONS = (
    "empty_line",
    "broken_json",
    "not_an_object",
    "missing_id",
    "ambiguous_id",  # Spark and Python read different ids from the line (a repeated "id" key)
    "label_not_integer",
    "label_out_of_range",
    "missing_pixels",
    "wrong_pixel_count",
    "non_numeric_pixel",
    "pixel_out_of_range",
    "missing_hashed_column",
    "duplicate_id",
)


@dataclass(frozen=True)
class ValidRow:
    """A row that passed validation."""

    row_id: str
    label: int
    image: bytes


def validate_line(line: str) -> tuple[str | None, ValidRow | None]:
    """(None, row) for a valid line, else (reason, None) with a reason from REASONS."""
    if not line.strip():
        return "empty_line", None
    try:
        record = json.loads(line)
    except ValueError:
        return "broken_json", None
    if not isinstance(record, dict):
        return "not_an_object", None
    row_id = record.get("id")
    if not isinstance(row_id, str) or not row_id.strip():
        return "missing_id", None
    label = record.get("label")
    if type(label) is not int:
        return "label_not_integer", None
    if not 0 <= label < NUM_CLASSES:
        return "label_out_of_range", None
    pixels = record.get("pixels")
    if not isinstance(pixels, list):
        return "missing_pixels", None
    if len(pixels) != IMAGE_BYTES:
        return "wrong_pixel_count", None
    try:
        image = bytes(pixels)  # C-speed type and range check of all 784 values at once
    except TypeError:
        return "non_numeric_pixel", None
    except ValueError:
        return "pixel_out_of_range", None
    return None, ValidRow(row_id, label, image)
