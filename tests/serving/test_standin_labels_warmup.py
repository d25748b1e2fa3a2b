"""Version labels and the model config file, and warmup replay, as TF Serving 2.20 does them:
server_core.cc's UpdateModelVersionLabelMap, server.cc's config polling, saved_model_warmup_util.cc.
Stand-in processes on loopback; the warmup files are TFRecords of real PredictionLog protos.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests

from tests.serving.models import IMAGE_SIDE, publish_copy, synthetic_images

MODEL = "digits"
ROWS = synthetic_images(2, seed=3)[0].astype(int).tolist()
NOT_AVAILABLE = "Request to assign label to version {v} of model digits, which is not currently available for inference"


def write_warmup(version_dir: Path, batches: list[list], *, input_name: str = "input_image",
                 extra: bytes = b"") -> Path:  # fmt: skip
    """`assets.extra/tf_serving_warmup_requests`: one PredictionLog (predict_log.request) per batch of rows."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for rows in batches:
            record = prediction_log_pb2.PredictionLog()
            request = record.predict_log.request
            request.model_spec.name = "ignored-by-warmup"
            request.inputs[input_name].CopyFrom(tf.make_tensor_proto(np.asarray(rows, np.float32)))
            writer.write(record.SerializeToString())
    if extra:
        path.write_bytes(extra)
    return path


def export_counting_model(directory: Path) -> Path:
    """A model that counts its serving_default calls; signature `calls` reads the count."""
    import tensorflow as tf

    class Counting(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.count = tf.Variable(0, dtype=tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIDE, IMAGE_SIDE, 1], tf.float32, name="input_image")])
        def serve(self, input_image: tf.Tensor) -> dict[str, tf.Tensor]:
            self.count.assign_add(1)
            return {"rows": tf.shape(input_image)[:1]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def calls(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"calls": tf.fill(tf.shape(x), self.count.read_value())}

    module = Counting()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve, "calls": module.calls})
    return directory


def wait_until(check: Callable[[], object], what: str, timeout_s: float = 120) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


def config_text(base: Path, versions: list[int], labels: dict[str, int]) -> str:
    label_text = "".join(f" version_labels {{ key: '{k}' value: {v} }}" for k, v in labels.items())
    return (
        f"model_config_list {{ config {{ name: '{MODEL}' base_path: '{base}' model_platform: 'tensorflow' "
        f"model_version_policy {{ specific {{ {' '.join(f'versions: {v}' for v in versions)} }} }}{label_text} }} }}"
    )


def label_version(url: str, label: str) -> str | None:
    response = requests.get(f"{url}/v1/models/{MODEL}/labels/{label}/metadata", timeout=30)
    return response.json()["model_spec"]["version"] if response.status_code == 200 else None


def test_labels_in_the_start_up_config_need_the_flag(start_standin, tmp_path: Path, model_store) -> None:
    base = tmp_path / "models" / MODEL
    publish_copy(model_store["good"], base, 1)
    config = tmp_path / "models.config"
    config.write_text(config_text(base, [1], {"stable": 1}))
    server = start_standin(f"--model_config_file={config}")
    # ServerCore::Create checks labels before anything loads: nothing is AVAILABLE yet.
    assert server.process.wait(timeout=120) == 255
    expected = f"Failed to start server. Error: FAILED_PRECONDITION: {NOT_AVAILABLE.format(v=1)}"
    assert expected in server.output()


def test_config_file_poll_and_the_allow_flag(start_standin, tmp_path: Path, model_store) -> None:
    base = tmp_path / "models" / MODEL
    for version in (1, 2):
        publish_copy(model_store["good"], base, version)
    config = tmp_path / "models.config"
    config.write_text(config_text(base, [1, 2, 3], {"stable": 1, "next": 3}))
    server = start_standin(
        f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
        "--allow_version_labels_for_unavailable_models", "--file_system_poll_wait_seconds=1",
    )  # fmt: skip
    server.wait_until_open(timeout_s=240)
    url = server.url
    assert label_version(url, "stable") == "1"
    pending = requests.post(f"{url}/v1/models/{MODEL}/labels/next:predict", json={"instances": ROWS}, timeout=30)
    assert pending.status_code == 404
    assert pending.json() == {"error": "Servable not found for request: Specific(digits, 3)"}

    # A label in use never moves to a version that is not AVAILABLE, flag or not.
    config.write_text(config_text(base, [1, 2, 3], {"stable": 3, "next": 3}))
    refused = f"PollFilesystemAndReloadConfig failed to ReloadConfig: {NOT_AVAILABLE.format(v=3)}"
    wait_until(lambda: refused in server.output(), "the poll refuses stable -> 3")
    assert label_version(url, "stable") == "1"

    # Moving to an AVAILABLE version, and a new label on an unavailable one: both applied by the poll.
    config.write_text(config_text(base, [1, 2, 3], {"stable": 2, "next": 3, "fresh": 3}))
    wait_until(lambda: label_version(url, "stable") == "2", "the poll moves stable to 2")
    fresh = requests.post(f"{url}/v1/models/{MODEL}/labels/fresh:predict", json={"instances": ROWS}, timeout=30)
    assert fresh.status_code == 404  # known label, version 3 not loaded yet

    publish_copy(model_store["good"], base, 3)
    wait_until(lambda: label_version(url, "next") == "3", "next serves once 3 is AVAILABLE")
    unknown = requests.post(f"{url}/v1/models/{MODEL}/labels/gone:predict", json={"instances": ROWS}, timeout=30)
    assert (unknown.status_code, unknown.json()) == (400, {"error": "Unrecognized servable version label: gone"})


def test_warmup_replayed_before_available_and_bad_records_fail_the_load(start_standin, tmp_path: Path,
                                                                        model_store) -> None:  # fmt: skip
    base = tmp_path / "models" / MODEL
    first = export_counting_model(tmp_path / "counting")
    warmup_file = write_warmup(first, [ROWS[:1], ROWS, ROWS[1:]])
    publish_copy(first, base, 1)
    server = start_standin(
        "--model_name=digits", f"--model_base_path={base}", "--num_request_iterations_for_warmup=2",
        "--max_num_load_retries=0", "--file_system_poll_wait_seconds=1",
    )  # fmt: skip
    server.wait_until_open(timeout_s=240)
    url = server.url
    served_path = base / "1" / "assets.extra" / "tf_serving_warmup_requests"
    assert warmup_file.exists()
    assert (
        f"Finished reading warmup data for model at {served_path}. Number of warmup records read: 3." in server.output()
    )
    calls = requests.post(f"{url}/v1/models/{MODEL}:predict", json={"signature_name": "calls", "instances": [0.0]},
                          timeout=30)  # fmt: skip
    assert calls.json() == {"predictions": [6]}  # 3 records x 2 iterations, all before AVAILABLE

    def failed(version: int) -> dict:
        def check() -> dict | None:
            status = requests.get(f"{url}/v1/models/{MODEL}/versions/{version}", timeout=30)
            entry = status.json().get("model_version_status", [{}])[0] if status.status_code == 200 else {}
            return entry if entry.get("state") == "END" else None

        return wait_until(check, f"version {version} ends")

    # A record the signature refuses: the load fails, END with the error; 1 keeps serving.
    publish_copy(model_store["good"], base, 2)
    write_warmup(base / "2", [ROWS], input_name="pixels")
    bad = failed(2)["status"]
    assert bad["error_code"] == "INVALID_ARGUMENT"
    assert bad["error_message"].startswith(
        "input size does not match signature: 1!=1 len({pixels}) != len({input_image})"
    )
    assert requests.get(f"{url}/v1/models/{MODEL}/versions/1", timeout=30).json()["model_version_status"][0][
        "state"] == "AVAILABLE"  # fmt: skip

    # More than 1000 records fails the load; so does a file that is not a TFRecord.
    publish_copy(model_store["good"], base, 3)
    write_warmup(base / "3", [ROWS[:1]] * 1001)
    too_many = failed(3)["status"]
    assert too_many == {
        "error_code": "INVALID_ARGUMENT",
        "error_message": f"Number of warmup records exceeds the maximum (1000) at "
        f"{base / '3' / 'assets.extra' / 'tf_serving_warmup_requests'}",
    }
    publish_copy(model_store["good"], base, 4)
    write_warmup(base / "4", [], extra=b"this is not a TFRecord file at all")
    garbage = failed(4)["status"]
    assert garbage["error_code"] == "DATA_LOSS"
    assert garbage["error_message"].endswith("Please verify your warmup data is in TFRecord format.")
    assert requests.post(f"{url}/v1/models/{MODEL}:predict", json={"signature_name": "calls", "instances": [0.0]},
                         timeout=30).json() == {"predictions": [6]}  # fmt: skip


def test_file_system_poll_wait_zero_polls_once(start_standin, tmp_path: Path, model_store) -> None:
    import socket

    base = tmp_path / "models" / MODEL
    base.mkdir(parents=True)
    server = start_standin("--model_name=digits", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0")
    server.wait_for_output("REST port stays closed")
    publish_copy(model_store["good"], base, 1)
    time.sleep(5)  # with periodic polls (the old stand-in polled every second even at 0) it would load now
    assert "loading servable version" not in server.output()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.rest_port)) != 0
