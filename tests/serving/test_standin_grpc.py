"""The stand-in's gRPC API (port 8500): Predict, GetModelMetadata, GetModelStatus and
HandleReloadConfigRequest with tensorflow-serving-api's protos, against TF Serving 2.20's rules
and messages. One stand-in process serves the module; one test goes through the image in Docker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import requests

from tests.serving.conftest import StandinProcess, free_port, say
from tests.serving.models import publish_copy

MODEL = "digits"


def grpc_client_module() -> ModuleType:
    """tfship.serving.grpc_client (imported on use: it brings grpc)."""
    from tfship.serving import grpc_client

    return grpc_client


def config_text(base: Path, versions: list[int], labels: dict[str, int] | None = None) -> str:
    """ModelServerConfig for `digits` with a specific version policy."""
    label_text = "".join(f" version_labels {{ key: '{k}' value: {v} }}" for k, v in (labels or {}).items())
    return (
        f"model_config_list {{ config {{ name: '{MODEL}' base_path: '{base}' model_platform: 'tensorflow' "
        f"model_version_policy {{ specific {{ {' '.join(f'versions: {v}' for v in versions)} }} }}{label_text} }} }}"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_store) -> Iterator[StandinProcess]:
    """digits 1 and 2 served (3 on disk, outside the policy), no labels at start."""
    root = tmp_path_factory.mktemp("grpc")
    base = root / "models" / MODEL
    for version in (1, 2, 3):
        publish_copy(model_store["good"], base, version)
    config = root / "models.config"
    config.write_text(config_text(base, [1, 2]))
    process = StandinProcess([f"--model_config_file={config}"], root / "standin.log")
    process.base = base
    try:
        process.wait_until_open(timeout_s=240)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def stubs(server: StandinProcess):
    """(PredictionService stub, ModelService stub) on the server's gRPC port."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel)
    channel.close()


def canary_rows(model_store, count: int = 8) -> tuple[list, np.ndarray]:
    canary = json.loads((model_store["good"] / "canary.json").read_text())
    return canary["instances"][:count], np.asarray(canary["probabilities"][:count])


def predict_request(rows: list, *, version: int | None = None, label: str | None = None, name: str = MODEL):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["input_image"].CopyFrom(tf.make_tensor_proto(np.asarray(rows, np.float32)))
    return request


def rpc_error(call, request) -> tuple[str, str]:
    import grpc

    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value.code().name, caught.value.details()


def test_grpc_predict_gives_the_rest_probabilities(server: StandinProcess, stubs, model_store) -> None:
    import tensorflow as tf

    rows, offline = canary_rows(model_store)
    rest = requests.post(f"{server.url}/v1/models/{MODEL}/versions/1:predict", json={"instances": rows}, timeout=60)
    assert rest.status_code == 200, rest.text
    response = stubs[0].Predict(predict_request(rows, version=1), timeout=60)
    assert (response.model_spec.name, response.model_spec.version.value) == (MODEL, 1)
    assert response.model_spec.signature_name == "serving_default"
    grpc_probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert response.outputs["probabilities"].float_val  # typed field, as TF Serving answers (AsProtoField)
    assert grpc_probabilities.shape == (8, 10)
    np.testing.assert_allclose(grpc_probabilities, np.asarray(rest.json()["predictions"]), atol=1e-6)
    np.testing.assert_allclose(grpc_probabilities, offline, atol=1e-5)  # the model's own offline answer
    latest = stubs[0].Predict(predict_request(rows), timeout=60)
    assert latest.model_spec.version.value == 2  # no version: the latest AVAILABLE

    client = grpc_client_module().GrpcServingClient(f"127.0.0.1:{server.grpc_port}", MODEL)
    try:
        code, body = client.predict(rows, version=1)
        assert code == 200
        np.testing.assert_allclose(np.asarray(body["predictions"]), grpc_probabilities, atol=1e-7)
        code, status = client.version_status()
        assert code == 200
        assert [(e["version"], e["state"]) for e in status["model_version_status"]] == [
            ("2", "AVAILABLE"),
            ("1", "AVAILABLE"),
        ]
        assert status["model_version_status"][0]["status"] == {"error_code": "OK", "error_message": ""}
        code, metadata = client.metadata(version=2)
        assert code == 200 and metadata["model_spec"]["version"] == "2"
        assert client.predict(rows, version=5) == (
            404,
            {"error": "Servable not found for request: Specific(digits, 5)", "grpc_code": "NOT_FOUND"},
        )
    finally:
        client.close()
    assert "No warmup data file found at" in server.output()


def test_grpc_status_metadata_and_errors_match_rest(server: StandinProcess, stubs, model_store) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    predict, models = stubs
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = MODEL
    status = models.GetModelStatus(status_request, timeout=30)
    state_name = get_model_status_pb2.ModelVersionStatus.State.Name
    states = {(s.version, state_name(s.state)) for s in status.model_version_status}
    assert states == {(1, "AVAILABLE"), (2, "AVAILABLE")}

    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata_request.model_spec.name = MODEL
    metadata = predict.GetModelMetadata(metadata_request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert [d.size for d in serving.inputs["input_image"].tensor_shape.dim] == [-1, 28, 28, 1]
    assert [d.size for d in serving.outputs["probabilities"].tensor_shape.dim] == [-1, 10]
    assert metadata.model_spec.version.value == 2

    rows, _ = canary_rows(model_store, 2)
    rest_errors = {
        "model": requests.post(f"{server.url}/v1/models/nope:predict", json={"instances": rows}, timeout=30),
        "version": requests.post(f"{server.url}/v1/models/{MODEL}/versions/5:predict", json={"instances": rows},
                                 timeout=30),
        "label": requests.post(f"{server.url}/v1/models/{MODEL}/labels/x:predict", json={"instances": rows},
                               timeout=30),
    }  # fmt: skip
    grpc_errors = {
        "model": rpc_error(predict.Predict, predict_request(rows, name="nope")),
        "version": rpc_error(predict.Predict, predict_request(rows, version=5)),
        "label": rpc_error(predict.Predict, predict_request(rows, label="x")),
    }
    assert grpc_errors == {
        "model": ("NOT_FOUND", "Servable not found for request: Latest(nope)"),
        "version": ("NOT_FOUND", "Servable not found for request: Specific(digits, 5)"),
        "label": ("INVALID_ARGUMENT", "Unrecognized servable version label: x"),
    }
    for key, (code, message) in grpc_errors.items():  # the same messages as REST
        assert rest_errors[key].json() == {"error": message}
        assert rest_errors[key].status_code == {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400}[code]

    status_request.model_spec.name = "nope"
    assert rpc_error(models.GetModelStatus, status_request) == (
        "NOT_FOUND",
        "Could not find any versions of model nope",
    )
    status_request.model_spec.name = MODEL
    status_request.model_spec.version.value = 7
    assert rpc_error(models.GetModelStatus, status_request) == ("NOT_FOUND", "Could not find version 7 of model digits")
    no_field = get_model_metadata_pb2.GetModelMetadataRequest()
    no_field.model_spec.name = MODEL
    assert rpc_error(predict.GetModelMetadata, no_field) == (
        "INVALID_ARGUMENT",
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    bad_signature = predict_request(rows)
    bad_signature.model_spec.signature_name = "nope"
    assert rpc_error(predict.Predict, bad_signature) == (
        "FAILED_PRECONDITION",
        'Serving signature key "nope" not found.',
    )
    extra_input = predict_request(rows)
    extra_input.inputs["extra"].CopyFrom(extra_input.inputs["input_image"])
    code, message = rpc_error(predict.Predict, extra_input)
    assert code == "INVALID_ARGUMENT" and message.startswith("input size does not match signature: 2!=1")
    import tensorflow as tf

    wrong_dtype = predict_request(rows)
    wrong_dtype.inputs["input_image"].CopyFrom(tf.make_tensor_proto(np.asarray(rows, np.int64)))
    code, message = rpc_error(predict.Predict, wrong_dtype)
    assert code == "INVALID_ARGUMENT" and "float" in message


def test_reload_config_assigns_labels_only_to_available_versions(server: StandinProcess, stubs, model_store) -> None:
    client = grpc_client_module().GrpcServingClient(f"127.0.0.1:{server.grpc_port}", MODEL)
    rows, _ = canary_rows(model_store, 2)
    try:
        assert client.reload_config(config_text(server.base, [1, 2], {"stable": 1, "canary": 2})) == (200, {})
        stable = stubs[0].Predict(predict_request(rows, label="stable"), timeout=30)
        assert stable.model_spec.version.value == 1
        canary = requests.get(f"{server.url}/v1/models/{MODEL}/labels/canary/metadata", timeout=30).json()
        assert canary["model_spec"]["version"] == "2"

        # 3 is on disk but not loaded: the reload is refused and the previous config stays in force.
        refused = client.reload_config(config_text(server.base, [1, 2, 3], {"stable": 1, "canary": 3}))
        message = "Request to assign label to version 3 of model digits, which is not currently available for inference"
        assert refused == (400, {"error": message, "grpc_code": "FAILED_PRECONDITION"})
        assert f"ReloadConfig failed: {message}" in server.output()
        assert requests.get(f"{server.url}/v1/models/{MODEL}/versions/3", timeout=30).status_code == 404  # not aspired
        canary = requests.get(f"{server.url}/v1/models/{MODEL}/labels/canary/metadata", timeout=30).json()
        assert canary["model_spec"]["version"] == "2"

        # The policy first (3 loads), then the label: both reloads apply.
        assert client.reload_config(config_text(server.base, [1, 2, 3], {"stable": 1, "canary": 2})) == (200, {})
        deadline = time.monotonic() + 120
        while client.version_status(3)[1].get("model_version_status", [{}])[0].get("state") != "AVAILABLE":
            assert time.monotonic() < deadline, client.version_status(3)
            time.sleep(0.2)
        assert client.reload_config(config_text(server.base, [1, 2, 3], {"stable": 1, "canary": 3})) == (200, {})
        assert stubs[0].Predict(predict_request(rows, label="canary"), timeout=30).model_spec.version.value == 3

        from tensorflow_serving.apis import model_management_pb2

        empty = model_management_pb2.ReloadConfigRequest()
        code, message = rpc_error(stubs[1].HandleReloadConfigRequest, empty)
        assert code == "INVALID_ARGUMENT" and "Only ModelConfigList is currently supported" in message
    finally:
        client.close()


@pytest.mark.docker
def test_container_serves_grpc_and_replays_warmup(serving_image: str, docker_api, serving_model: str,
                                                  tmp_path: Path, model_store) -> None:  # fmt: skip
    from tests.serving.test_standin_labels_warmup import write_warmup
    from tfship.serving.client import ServingClient
    from tfship.serving.container import ServingSpec, container_alive_check, reconcile_container

    base = tmp_path / "serving"
    version = publish_copy(model_store["good"], base, 2024010100)
    rows, offline = canary_rows(model_store, 4)
    write_warmup(version, [rows[:1], rows[1:3]])
    spec = ServingSpec(model=serving_model, serving_dir=str(base), image=serving_image, grpc_port=free_port(),
                       rest_port=free_port())  # fmt: skip
    started = time.monotonic()
    action = reconcile_container(docker_api, spec)
    rest = ServingClient(f"http://127.0.0.1:{spec.rest_port}", serving_model)
    alive = container_alive_check(docker_api, action.container_id)
    rest.wait_until_available(2024010100, timeout_s=300, check_alive=alive)
    say(f"container with gRPC and warmup: AVAILABLE after {time.monotonic() - started:.1f}s")
    client = grpc_client_module().GrpcServingClient(f"127.0.0.1:{spec.grpc_port}", serving_model)
    try:
        code, body = client.predict(rows, version=2024010100)
        assert code == 200
        np.testing.assert_allclose(np.asarray(body["predictions"]), offline, atol=1e-5)
        assert client.version_status(2024010100)[1]["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        client.close()
    logs = docker_api.logs(action.container_id).decode("utf-8", "replace")
    assert "Number of warmup records read: 2." in logs
    assert f"Running gRPC ModelServer at 0.0.0.0:{spec.grpc_port}" in logs
