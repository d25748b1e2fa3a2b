"""The stand-in pins TFSERVING_CONTRACT.md: run as a local process on loopback (fast), one through Docker."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.serving.conftest import PROJECT_ROOT, free_port, say
from tests.serving.models import publish_copy, synthetic_images

IMAGES, _ = synthetic_images(3, seed=99)
ROWS = IMAGES.astype(int).tolist()


def statuses(url: str, model: str = "mnist") -> dict[str, dict]:
    response = requests.get(f"{url}/v1/models/{model}", timeout=10)
    assert response.status_code == 200, response.text
    return {entry["version"]: entry for entry in response.json()["model_version_status"]}


def wait_for_state(url: str, version: str, state: str, model: str = "mnist", timeout_s: float = 60) -> list[str]:
    """Poll until `version` shows `state`; return the distinct states seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        entry = statuses(url, model).get(version)
        if entry is not None and (not seen or seen[-1] != entry["state"]):
            seen.append(entry["state"])
        if seen and seen[-1] == state:
            return seen
        assert time.monotonic() < deadline, f"version {version} never reached {state}; seen {seen}"
        time.sleep(0.05)


def served_version(url: str, model: str = "mnist") -> str:
    response = requests.get(f"{url}/v1/models/{model}/metadata", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["model_spec"]["version"]


@pytest.fixture
def base_path(tmp_path: Path, model_store) -> Path:
    """A base path with version 1 and the non-version names the server must ignore."""
    base = tmp_path / "models" / "mnist"
    publish_copy(model_store["good"], base, 1)
    for ignored in (".staging-abc", "temp-7", "8.tmp", "v9"):
        shutil.copytree(model_store["good"], base / ignored)
    return base


def test_flags_bad_value_exits_255_and_unknown_flag_only_warns(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "serving_standin.server", "--rest_api_port=abc", f"--model_base_path={tmp_path}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 255
    assert "rest_api_port" in done.stderr

    from serving_standin.flags import parse_flags

    warnings: list[str] = []
    flags = parse_flags(["--rest_api_port=1", "--fle_system_poll_wait_seconds=5", "--rest_api_port=2"], warnings.append)
    assert flags["rest_api_port"] == 2  # a later copy wins
    assert flags["file_system_poll_wait_seconds"] == 1
    assert warnings and "fle_system_poll_wait_seconds" in warnings[0]


def test_status_predict_metadata_and_errors(start_standin, base_path: Path) -> None:
    server = start_standin("--model_name=mnist", f"--model_base_path={base_path}", "--unknown_typo=1")
    server.wait_until_open()
    url = server.url
    assert "unknown_typo" in server.output()

    status = requests.get(f"{url}/v1/models/mnist", timeout=10).json()
    assert status == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert requests.get(f"{url}/v1/models/mnist/labels/whatever", timeout=10).json() == status

    row = requests.post(f"{url}/v1/models/mnist:predict", json={"instances": ROWS}, timeout=30)
    assert row.status_code == 200
    predictions = row.json()["predictions"]
    assert len(predictions) == 3 and all(len(p) == 10 for p in predictions)
    assert all(abs(sum(p) - 1) < 1e-5 for p in predictions)
    columnar = requests.post(f"{url}/v1/models/mnist/versions/1:predict", json={"inputs": ROWS}, timeout=30)
    assert columnar.status_code == 200
    assert columnar.json()["outputs"] == predictions

    metadata = requests.get(f"{url}/v1/models/mnist/versions/1/metadata", timeout=10).json()
    assert metadata["model_spec"] == {"name": "mnist", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["input_image"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["input_image"]["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    assert [d["size"] for d in signature["outputs"]["probabilities"]["tensor_shape"]["dim"]] == ["-1", "10"]

    def error(method: str, path: str, status: int, body: str | dict | None = None) -> str:
        data = body if isinstance(body, str) else json.dumps(body) if body is not None else None
        response = requests.request(method, f"{url}{path}", data=data, timeout=30)
        assert response.status_code == status, (path, response.text)
        assert response.headers["Content-Type"] == "application/json"
        return response.json()["error"]

    assert error("GET", "/v1/models/nope", 404) == "Could not find any versions of model nope"
    assert error("GET", "/v1/models/mnist/versions/5", 404) == "Could not find version 5 of model mnist"
    assert (
        error("POST", "/v1/models/nope:predict", 404, {"instances": ROWS})
        == "Servable not found for request: Latest(nope)"
    )
    assert error("POST", "/v1/models/mnist/versions/5:predict", 404, {"instances": ROWS}) == (
        "Servable not found for request: Specific(mnist, 5)"
    )
    assert error("POST", "/v1/models/mnist/labels/x:predict", 400, {"instances": ROWS}) == (
        "Unrecognized servable version label: x"
    )
    assert error("POST", "/v1/models/nope:predict", 400, "{not json").startswith("JSON Parse error")
    assert "instances" in error("POST", "/v1/models/mnist:predict", 400, {"instances": ROWS, "inputs": ROWS})
    assert "instances" in error("POST", "/v1/models/mnist:predict", 400, {"signature_name": "serving_default"})
    assert "not found" in error("POST", "/v1/models/mnist:predict", 400, {"signature_name": "x", "instances": ROWS})
    assert error("POST", "/v1/models/mnist:predict", 400, {"instances": [[1, 2], [3]]})
    assert error("POST", "/v1/models/mnist:predict", 400, {"instances": [[["a"]]]})
    assert error("GET", "/v1/models/mnist/versions/1/bogus", 400).startswith("Malformed request: GET /v1/")
    outside = requests.get(f"{url}/healthz", timeout=10)
    assert outside.status_code == 404 and "text/html" in outside.headers["Content-Type"]


def test_hot_reload_states_failed_load_and_rollback(start_standin, base_path: Path, model_store) -> None:
    server = start_standin(
        "--model_name=mnist", f"--model_base_path={base_path}", "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0",
    )  # fmt: skip
    server.wait_until_open()
    url = server.url
    assert set(statuses(url)) == {"1"}  # .staging-abc, temp-7, 8.tmp and v9 are not versions

    publish_copy(model_store["good"], base_path, 2)
    seen = wait_for_state(url, "2", "AVAILABLE")
    assert [STATE_ORDER.index(s) for s in seen] == sorted(STATE_ORDER.index(s) for s in seen)
    wait_for_state(url, "1", "END")
    assert list(statuses(url)) == ["2", "1"]  # newest first, the unloaded one stays listed
    assert statuses(url)["1"]["status"]["error_code"] == "OK"
    assert served_version(url) == "2"

    # A version that cannot load: END with the error, the old one keeps serving.
    publish_copy(model_store["no_variables"], base_path, 3)
    wait_for_state(url, "3", "END")
    failed = statuses(url)["3"]["status"]
    assert failed["error_code"] != "OK" and "variables" in failed["error_message"]
    assert statuses(url)["2"]["state"] == "AVAILABLE"
    assert served_version(url) == "2"

    # Removing the newest directory rolls back: 1 is loaded again, then 2 is unloaded.
    shutil.rmtree(base_path / "3")
    (base_path / "2").rename(base_path / ".rejected-2")
    wait_for_state(url, "1", "AVAILABLE")
    wait_for_state(url, "2", "END")
    assert served_version(url) == "1"
    assert requests.post(f"{url}/v1/models/mnist:predict", json={"instances": ROWS}, timeout=30).status_code == 200

    # Rewriting files of a loaded version changes nothing; an empty base path unloads everything.
    (base_path / "1" / "canary.json").write_text("{}")
    assert served_version(url) == "1"
    (base_path / "1").rename(base_path / ".gone-1")
    wait_for_state(url, "1", "END")
    response = requests.post(f"{url}/v1/models/mnist:predict", json={"instances": ROWS}, timeout=30)
    assert response.status_code == 404
    assert response.json() == {"error": "Servable not found for request: Latest(mnist)"}


STATE_ORDER = ["START", "LOADING", "AVAILABLE", "UNLOADING", "END"]


def test_rest_port_stays_closed_until_the_first_version_loads(start_standin, tmp_path: Path, model_store) -> None:
    base = tmp_path / "empty" / "mnist"
    base.mkdir(parents=True)
    server = start_standin("--model_name=mnist", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1")
    server.wait_for_output("REST port stays closed")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.rest_port)) != 0
    publish_copy(model_store["good"], base, 7)
    server.wait_until_open()
    assert statuses(server.url)["7"]["state"] == "AVAILABLE"


def test_model_config_file_policy_and_labels(start_standin, tmp_path: Path, model_store) -> None:
    from tfship.serving.server_config import render_model_config

    base = tmp_path / "models" / "digits"
    for version in (1, 2, 3):
        publish_copy(model_store["good"], base, version)
    config = tmp_path / "models.config"
    text = render_model_config("digits", policy="specific", versions=[1, 2], labels={"stable": 1, "canary": 2})
    config.write_text(text.replace("/models/digits", str(base)))
    # Labels in the start-up config name versions that are not loaded yet: TF Serving refuses them
    # (ServerCore checks labels first) unless this flag is set; see test_standin_labels_warmup.py.
    server = start_standin(
        f"--model_config_file={config}", "--model_name=ignored", "--model_base_path=/nowhere",
        "--allow_version_labels_for_unavailable_models",
    )  # fmt: skip
    server.wait_until_open()
    url = server.url
    wait_for_state(url, "1", "AVAILABLE", model="digits")
    wait_for_state(url, "2", "AVAILABLE", model="digits")
    assert set(statuses(url, "digits")) == {"1", "2"}  # 3 is not in the specific policy
    stable = requests.get(f"{url}/v1/models/digits/labels/stable/metadata", timeout=10).json()
    assert stable["model_spec"]["version"] == "1"
    canary = requests.post(f"{url}/v1/models/digits/labels/canary:predict", json={"instances": ROWS}, timeout=30)
    assert canary.status_code == 200
    assert requests.get(f"{url}/v1/models/ignored", timeout=10).status_code == 404


@pytest.mark.docker
def test_container_through_the_entrypoint(serving_image: str, docker_api, serving_model: str, tmp_path: Path,
                                          model_store) -> None:  # fmt: skip
    from tfship.serving.client import ServingClient
    from tfship.serving.container import ServingSpec, container_alive_check, reconcile_container

    base = tmp_path / "serving"
    publish_copy(model_store["good"], base, 2024010100)
    spec = ServingSpec(model=serving_model, serving_dir=str(base), image=serving_image, grpc_port=free_port(),
                       rest_port=free_port())  # fmt: skip
    started = time.monotonic()
    action = reconcile_container(docker_api, spec)
    client = ServingClient(f"http://127.0.0.1:{spec.rest_port}", serving_model)
    client.wait_until_available(
        2024010100, timeout_s=300, check_alive=container_alive_check(docker_api, action.container_id)
    )
    say(f"container start (create + start + first version AVAILABLE): {time.monotonic() - started:.1f}s")
    assert action.action == "created"
    info = docker_api.inspect_container(action.container_id)
    assert info["Config"]["Env"] and f"MODEL_NAME={serving_model}" in info["Config"]["Env"]
    assert info["HostConfig"]["Binds"] == [f"{base}:/models/{serving_model}:ro"]
    code, body = client.predict(ROWS, version=2024010100)
    assert code == 200 and len(body["predictions"]) == 3
