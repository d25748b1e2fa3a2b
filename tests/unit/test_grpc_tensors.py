"""The gRPC client's TensorProto packing, checked against TensorFlow's own make_tensor_proto/make_ndarray."""

from __future__ import annotations

import numpy as np
import pytest

from tfship.serving.grpc_client import GrpcServingError, ndarray, tensor_proto

tf = pytest.importorskip("tensorflow")

CASES = [
    ("DT_FLOAT", [[0.5, -1.25, 3.0], [1e-7, 2.0, 0.0]], np.float32),
    ("DT_DOUBLE", [1.0, 2.5, -3.75], np.float64),
    ("DT_INT64", [[1, -2], [2**40, 0]], np.int64),
    ("DT_INT32", [7, -8, 9], np.int32),
    ("DT_UINT8", [[0, 255, 17]], np.uint8),
    ("DT_BOOL", [True, False, True], bool),
    ("DT_HALF", [0.5, 1.5, -2.0], np.float16),
]


@pytest.mark.parametrize(("dtype", "values", "numpy_type"), CASES)
def test_packed_tensors_read_back_by_tensorflow(dtype, values, numpy_type):
    ours = tensor_proto(values, dtype)
    read = tf.make_ndarray(ours)
    assert read.dtype == np.dtype(numpy_type) and read.tolist() == np.asarray(values, numpy_type).tolist()


@pytest.mark.parametrize(("dtype", "values", "numpy_type"), CASES)
def test_tensorflow_tensors_read_back_by_the_client(dtype, values, numpy_type):
    theirs = tf.make_tensor_proto(np.asarray(values, numpy_type))
    assert ndarray(theirs).tolist() == tf.make_ndarray(theirs).tolist()


def test_typed_value_fields_and_the_repeated_last_value():
    # TF Serving and other producers may fill float_val/int64_val instead of tensor_content.
    for proto in (
        tf.make_tensor_proto(1.5, dtype=tf.float32, shape=[2, 3]),
        tf.make_tensor_proto([4, 5], dtype=tf.int64, shape=[2, 2]),
        tf.make_tensor_proto([1.0, 2.0], dtype=tf.float16, shape=[3]),
    ):
        proto.tensor_content = b""
        assert ndarray(proto).tolist() == tf.make_ndarray(proto).tolist()


def test_strings():
    ours = tensor_proto([["a", b"b\xff"]], "DT_STRING")
    assert tf.make_ndarray(ours).tolist() == [[b"a", b"b\xff"]]
    assert ndarray(tf.make_tensor_proto([b"x", b"yz"])).tolist() == [b"x", b"yz"]


def test_an_unsupported_dtype_is_named():
    with pytest.raises(GrpcServingError, match="DT_COMPLEX64"):
        tensor_proto([1.0], "DT_COMPLEX64")
