"""The TFRecord schema shared by the Spark writer and the training reader.

Records are `tf.train.Example`s with:
  id        bytes   the row id (UTF-8)
  id_hash   int64   Spark's xxhash64 of the id: split, shards and CV folds all derive from it
  label     int64   0..9
  image     bytes   784 raw uint8 pixels, row-major 28x28

The image is raw bytes rather than an int64 list: 784 bytes instead of ~1.1 kB of varints
per record, and `tf.io.decode_raw` on a batch is far cheaper than materialising int64 lists
(bench/preprocess.py prints both sizes). The writer encodes the protobuf by hand so Spark's
Python workers need neither TensorFlow nor protobuf classes; tests check that TensorFlow
parses these bytes to the same values.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

IMAGE_SIDE = 28
IMAGE_BYTES = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10
SCHEMA_VERSION = 1

BYTES_FEATURES = ("id", "image")
INT64_FEATURES = ("id_hash", "label")


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # protobuf int64: two's complement, always 10 bytes
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(values: list[bytes]) -> bytes:
    return _field(1, b"".join(_field(1, value) for value in values))  # Feature.bytes_list


def _int64_feature(values: list[int]) -> bytes:
    return _field(3, _field(1, b"".join(_varint(value) for value in values)))  # Feature.int64_list, packed


def encode_features(features: Mapping[str, bytes | int | list[Any]]) -> bytes:
    """Serialise a `tf.train.Example` from {name: bytes | int | list}; keys sorted for stable bytes."""
    entries = []
    for name in sorted(features):
        value = features[name]
        values = value if isinstance(value, list) else [value]
        if values and isinstance(values[0], (bytes, bytearray)):
            feature = _bytes_feature([bytes(v) for v in values])
        else:
            feature = _int64_feature([int(v) for v in values])
        entries.append(_field(1, _field(1, name.encode("utf-8")) + _field(2, feature)))
    return _field(1, b"".join(entries))  # Example.features


def encode_example(*, row_id: str, id_hash: int, label: int, image: bytes) -> bytes:
    """One record of this project's schema."""
    if len(image) != IMAGE_BYTES:
        raise ValueError(f"image of row {row_id!r} has {len(image)} bytes, expected {IMAGE_BYTES}")
    return encode_features({"id": row_id.encode("utf-8"), "id_hash": id_hash, "label": label, "image": image})


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """TFRecord framing: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc32c(length)) + data + struct.pack("<I", _masked_crc32c(data))


def feature_spec() -> dict[str, Any]:
    """`tf.io.parse_example` spec of the schema (imports TensorFlow)."""
    import tensorflow as tf

    return {
        "id": tf.io.FixedLenFeature([], tf.string),
        "id_hash": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "image": tf.io.FixedLenFeature([], tf.string),
    }


def parse_batch(serialized: Any) -> dict[str, Any]:
    """A batch of records to {"image": float32 (-1,28,28,1) in 0..255, "label", "id_hash", "id"}."""
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, feature_spec())
    pixels = tf.io.decode_raw(parsed["image"], tf.uint8)
    image = tf.reshape(tf.cast(pixels, tf.float32), [-1, IMAGE_SIDE, IMAGE_SIDE, 1])
    return {"image": image, "label": parsed["label"], "id_hash": parsed["id_hash"], "id": parsed["id"]}


def decode_batch(serialized: Any) -> tuple[Any, Any]:
    """Parse a batch of serialized records into (images float32 (-1,28,28,1) in 0..255, labels int64)."""
    parsed = parse_batch(serialized)
    return parsed["image"], parsed["label"]
