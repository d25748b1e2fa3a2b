"""Warmup replay at load time, as saved_model_warmup_util.cc does it (TF Serving 2.20).

`<version>/assets.extra/tf_serving_warmup_requests` is a TFRecord file of PredictionLog protos.
Each record is replayed `iterations` times before the version becomes AVAILABLE; more than 1000
records, a record that does not parse or a request that fails makes the load fail. The stand-in
replays predict_log records (the project's models have predict signatures only).
"""

from __future__ import annotations

import os
import time

from serving_standin.models import Servable, ServingError, log

REQUESTS_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000
_UNSUPPORTED = ("session_run_log", "predict_streamed_log")  # Unimplemented in the real server too


def warmup_path(export_dir: str) -> str:
    """`<export_dir>/assets.extra/tf_serving_warmup_requests`."""
    return os.path.join(export_dir, "assets.extra", REQUESTS_FILE)


def run_warmup(model: str, export_dir: str, servable: Servable, iterations: int) -> int:
    """Replay the warmup records against `servable`; return how many were read (raises on failure)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from serving_standin import protos

    started = time.monotonic()
    path = warmup_path(export_dir)
    if not os.path.exists(path):
        log(f"No warmup data file found at {path}")
        return 0
    iterations = iterations if iterations > 0 else 1
    log(
        f"Starting to read warmup data for model at {path} with model-warmup-options "
        f"num_request_iterations: {iterations}"
    )
    records = 0
    try:
        for raw in tf.data.TFRecordDataset(path):
            record = prediction_log_pb2.PredictionLog()
            try:
                record.ParseFromString(raw.numpy())
            except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
                raise ServingError("INVALID_ARGUMENT", f"Failed to parse warmup record from {path}") from None
            kind = record.WhichOneof("log_type")
            if kind in _UNSUPPORTED:
                number = record.DESCRIPTOR.fields_by_name[kind].number
                raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {number}")
            if kind not in (None, "predict_log"):
                raise ServingError("UNIMPLEMENTED", f"the stand-in replays predict_log warmup records only, not {kind}")
            for _ in range(iterations if kind else 0):
                protos.predict(model, servable, record.predict_log.request)
            records += 1
            if records > MAX_RECORDS:
                raise ServingError(
                    "INVALID_ARGUMENT", f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}"
                )
    except tf.errors.DataLossError as err:
        message = f"{err.message}. Please verify your warmup data is in TFRecord format."
        raise ServingError("DATA_LOSS", message) from None
    elapsed_us = int((time.monotonic() - started) * 1e6)
    log(
        f"Finished reading warmup data for model at {path}. Number of warmup records read: {records}. "
        f"Elapsed time (microseconds): {elapsed_us}."
    )
    return records
