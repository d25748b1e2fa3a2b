"""TF Serving's warmup file for a version: requests the server replays before the version is AVAILABLE.

`<version dir>/assets.extra/tf_serving_warmup_requests` is a TFRecord file of
`tensorflow.serving.PredictionLog` protos (at most 1000; a record that fails fails the load). Made
from the canary rows at export time, so the first client requests after a swap do not pay the
model's first-call cost. Written deterministically: the same rows give the same bytes (and digest).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving refuses a version with more
# Request sizes replayed: single rows as most clients send, and the canary's batches.
BATCH_SIZES = (1, 1, 1, 1, 8, 8, 32, 32)


def warmup_path(version_dir: Path) -> Path:
    """Where TF Serving looks for a version's warmup records."""
    return Path(version_dir) / WARMUP_DIR / WARMUP_FILE


def write_warmup(
    version_dir: Path,
    *,
    model: str,
    instances: Sequence[Any],
    input_name: str,
    signature_name: str = "serving_default",
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> Path:
    """Write PredictionLog records (predict requests of `batch_sizes` rows taken from `instances`)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    if not instances or len(batch_sizes) > MAX_RECORDS:
        raise ValueError(f"warmup needs rows and at most {MAX_RECORDS} records")
    path = warmup_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for index, size in enumerate(batch_sizes):
            rows = [instances[(index + i) % len(instances)] for i in range(size)]
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model, signature_name=signature_name)
            )
            request.inputs[input_name].CopyFrom(tf.make_tensor_proto(np.asarray(rows, dtype=np.float32)))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString(deterministic=True))
    return path


def read_warmup(version_dir: Path) -> list[Any]:
    """The PredictionLog records of a version (empty when it has none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(version_dir)
    if not path.exists():
        return []
    records = []
    for raw in tf.data.TFRecordDataset(str(path)):
        records.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    return records
