"""The hand-written encoder must produce what TensorFlow itself reads."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from tfship.data.schema import IMAGE_BYTES, decode_batch, encode_example, encode_features, frame_record

tf = pytest.importorskip("tensorflow")


def test_tensorflow_parses_hand_encoded_examples():
    image = bytes(range(256)) * 3 + bytes(16)
    data = encode_example(row_id="20261125-000042", id_hash=-7311729286712034457, label=7, image=image)
    example = tf.train.Example.FromString(data)
    feature = example.features.feature
    assert feature["id"].bytes_list.value == [b"20261125-000042"]
    assert feature["id_hash"].int64_list.value == [-7311729286712034457]
    assert feature["label"].int64_list.value == [7]
    assert feature["image"].bytes_list.value == [image]


def test_int64_lists_and_multiple_values():
    data = encode_features({"values": [0, 1, 127, 128, 300, -1, 2**62], "names": [b"a", b""]})
    feature = tf.train.Example.FromString(data).features.feature
    assert list(feature["values"].int64_list.value) == [0, 1, 127, 128, 300, -1, 2**62]
    assert list(feature["names"].bytes_list.value) == [b"a", b""]


def test_framed_gzip_records_read_back_with_tf_data(tmp_path):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, IMAGE_BYTES, dtype=np.uint8).tobytes() for _ in range(5)]
    payload = b"".join(
        frame_record(encode_example(row_id=f"r{i}", id_hash=i * 1000, label=i, image=images[i])) for i in range(5)
    )
    path = tmp_path / "part-00000.tfrecord.gz"
    path.write_bytes(gzip.compress(payload, mtime=0))
    dataset = tf.data.TFRecordDataset([str(path)], compression_type="GZIP").batch(5)
    batch_images, labels = decode_batch(next(iter(dataset)))
    assert labels.numpy().tolist() == [0, 1, 2, 3, 4]
    assert batch_images.shape == (5, 28, 28, 1)
    expected = np.frombuffer(images[3], dtype=np.uint8).reshape(28, 28).astype(np.float32)
    np.testing.assert_array_equal(batch_images.numpy()[3, :, :, 0], expected)


def test_wrong_image_size_is_refused_with_the_row_id():
    with pytest.raises(ValueError, match="'bad-row' has 10 bytes"):
        encode_example(row_id="bad-row", id_hash=1, label=1, image=bytes(10))
