"""Deploy operator, canary, rollback and zero downtime against a real Docker engine."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.serving.conftest import fake_context, free_port, say
from tests.serving.models import publish_copy, synthetic_images

pytestmark = pytest.mark.docker
V1, V2, V3 = 2024010100, 2024010200, 2024010300


def deploy(model: str, serving_dir: Path, version: int, image: str, docker_url: str, rest_port: int, **extra):
    from tfship_airflow.deploy import DeployServingOperator

    operator = DeployServingOperator(
        task_id="deploy_serving", model=model, host="local", serving_dir=str(serving_dir), version=version,
        image=image, docker_url=docker_url, rest_port=rest_port, grpc_port=extra.pop("grpc_port", rest_port + 1),
        available_timeout_s=300, **extra,
    )  # fmt: skip
    return operator.execute(fake_context("deploy_serving"))


def canary(model: str, serving_dir: Path, version: int, rest_port: int):
    from tfship_airflow.canary import CanaryServingOperator

    operator = CanaryServingOperator(
        task_id="canary_serving", model=model, host="local", serving_dir=str(serving_dir), version=version,
        rest_port=rest_port, rollback_timeout_s=300, latency_budget_ms=60_000,
    )  # fmt: skip
    return operator.execute(fake_context("canary_serving"))


def served_version(rest_port: int, model: str) -> str:
    body = requests.get(f"http://127.0.0.1:{rest_port}/v1/models/{model}/metadata", timeout=30).json()
    return body["model_spec"]["version"]


def test_same_spec_untouched_changed_spec_recreated_killed_recreated(
    serving_image, docker_base_url, docker_api, serving_model, tmp_path: Path, model_store
) -> None:
    base = tmp_path / "serving"
    publish_copy(model_store["good"], base, V1)
    rest_port, grpc_port = free_port(), free_port()
    first = deploy(serving_model, base, V1, serving_image, docker_base_url, rest_port, grpc_port=grpc_port)
    assert first["action"] == "created"
    started_at = docker_api.inspect_container(first["container_id"])["State"]["StartedAt"]

    # Same spec, new version: the container is left alone and hot reload brings V2.
    publish_copy(model_store["good"], base, V2)
    same = deploy(serving_model, base, V2, serving_image, docker_base_url, rest_port, grpc_port=grpc_port)
    assert same["action"] == "kept" and same["container_id"] == first["container_id"]
    assert docker_api.inspect_container(first["container_id"])["State"]["StartedAt"] == started_at
    assert served_version(rest_port, serving_model) == str(V2)

    # A changed flag is a changed spec: recreated, and the downtime is reported.
    changed = deploy(serving_model, base, V2, serving_image, docker_base_url, rest_port, grpc_port=grpc_port,
                     poll_wait_s=2)  # fmt: skip
    assert changed["action"] == "recreated" and changed["container_id"] != first["container_id"]
    assert changed["spec_hash"] != first["spec_hash"]
    assert changed["downtime_s"] >= 0
    say(f"recreate on spec change: downtime {changed['downtime_s']}s")
    assert first["container_id"] not in {c["Id"] for c in docker_api.containers(all=True)}

    # A killed container is not restarted by the engine; the next deploy recreates it.
    docker_api.kill(changed["container_id"])
    again = deploy(serving_model, base, V2, serving_image, docker_base_url, rest_port, grpc_port=grpc_port,
                   poll_wait_s=2)  # fmt: skip
    assert again["action"] == "recreated" and "exited" in again["reason"]
    assert served_version(rest_port, serving_model) == str(V2)


def test_leftover_of_a_killed_task_is_found_by_name_not_a_409(
    serving_image, docker_base_url, docker_api, serving_model, tmp_path: Path, model_store
) -> None:
    from tfship.serving.container import ServingSpec

    base = tmp_path / "serving"
    publish_copy(model_store["good"], base, V1)
    rest_port = free_port()
    # A task killed between create and start leaves a created, labelled container with our name.
    stale = ServingSpec(model=serving_model, serving_dir=str(base), image=serving_image, rest_port=rest_port,
                        grpc_port=free_port(), poll_wait_s=3)  # fmt: skip
    leftover = docker_api.create_container(**stale.create_kwargs(docker_api))
    result = deploy(serving_model, base, V1, serving_image, docker_base_url, rest_port)
    assert result["action"] == "recreated" and leftover["Id"] in result["removed"]
    names = [c["Names"] for c in docker_api.containers(all=True, filters={"label": f"tfship.model={serving_model}"})]
    assert names == [[f"/tfserving-{serving_model}"]]


def test_bad_model_fails_canary_rolls_back_and_alerts(
    serving_image, docker_base_url, serving_model, tmp_path: Path, model_store, webhook
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    base = tmp_path / "serving"
    publish_copy(model_store["good"], base, V1)
    rest_port = free_port()
    deploy(serving_model, base, V1, serving_image, docker_base_url, rest_port)
    good = canary(serving_model, base, V1, rest_port)
    assert good["passed"] and good["accuracy"] == 1.0
    say(f"canary of a good version: latency ms {good['latency_ms']}")

    publish_copy(model_store["constant"], base, V2)
    deployed = deploy(serving_model, base, V2, serving_image, docker_base_url, rest_port)
    assert deployed["action"] == "kept"
    with pytest.raises(AirflowFailException) as failed:
        canary(serving_model, base, V2, rest_port)
    assert "accuracy" in str(failed.value) and "rolled back: version 2024010100" in str(failed.value)
    assert (base / ".rejected" / str(V2)).is_dir() and not (base / str(V2)).exists()
    assert served_version(rest_port, serving_model) == str(V1)
    [alert] = webhook.wait_for(1)
    assert serving_model in alert["text"] and "accuracy" in alert["text"] and "version 2024010200" in alert["text"]
    events = [json.loads(line) for line in (base / "releases.jsonl").read_text().splitlines()]
    assert [(e["event"], e["version"], e["passed"]) for e in events] == [("canary", V1, True), ("canary", V2, False)]
    assert events[1]["rollback"]["serving"] == V1


def test_version_that_fails_to_load_rolls_back_and_alerts(
    serving_image, docker_base_url, serving_model, tmp_path: Path, model_store, webhook
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    base = tmp_path / "serving"
    publish_copy(model_store["good"], base, V1)
    rest_port = free_port()
    flags = ("--max_num_load_retries=0",)  # the real default retries 5 times, a minute apart
    deploy(serving_model, base, V1, serving_image, docker_base_url, rest_port, extra_flags=flags)
    publish_copy(model_store["no_variables"], base, V2)
    with pytest.raises(AirflowFailException) as failed:
        deploy(serving_model, base, V2, serving_image, docker_base_url, rest_port, extra_flags=flags)
    assert "failed to load" in str(failed.value) and "variables" in str(failed.value)
    assert (base / ".rejected" / str(V2)).is_dir()
    assert served_version(rest_port, serving_model) == str(V1)
    [alert] = webhook.wait_for(1)
    assert "load" in alert["text"] and serving_model in alert["text"]


def test_zero_downtime_while_publishing_and_rolling_back(
    serving_image, docker_base_url, serving_model, tmp_path: Path, model_store
) -> None:
    from tfship.release.serving_dir import ServingDir
    from tfship.serving.client import ServingClient
    from tfship.serving.rollback import reject_versions

    base = tmp_path / "serving"
    publish_copy(model_store["good"], base, V1)
    rest_port = free_port()
    deploy(serving_model, base, V1, serving_image, docker_base_url, rest_port)
    url = f"http://127.0.0.1:{rest_port}/v1/models/{serving_model}:predict"
    images, _ = synthetic_images(4, seed=5)
    payload = json.dumps({"instances": images.astype(int).tolist()})
    stop = threading.Event()
    outcomes: list[tuple[float, float, int, str]] = []  # (start, latency s, HTTP status, error)
    max_requests = 20_000  # bounded even if the stop signal were lost

    def stream() -> None:
        session = requests.Session()
        while not stop.is_set() and len(outcomes) < max_requests:
            began = time.monotonic()
            try:
                response = session.post(url, data=payload, timeout=30)
                error = (
                    "" if response.status_code == 200 and len(response.json()["predictions"]) == 4 else response.text
                )
                outcomes.append((began, time.monotonic() - began, response.status_code, error[:200]))
            except requests.RequestException as err:
                outcomes.append((began, time.monotonic() - began, 0, str(err)[:200]))

    clients = [threading.Thread(target=stream, daemon=True) for _ in range(2)]
    for client in clients:
        client.start()
    serving = ServingClient(f"http://127.0.0.1:{rest_port}", serving_model)
    try:
        switch_began = time.monotonic()
        publish_copy(model_store["good"], base, V2)
        serving.wait_until_available(V2, timeout_s=300)
        switch_ended = time.monotonic()
        publish_copy(model_store["constant"], base, V3)
        serving.wait_until_available(V3, timeout_s=300)
        rollback_began = time.monotonic()
        result = reject_versions(ServingDir(base), [V3], serving, timeout_s=300)
        rollback_ended = time.monotonic()
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
    assert result.serving == V2
    failures = [o for o in outcomes if o[3]]

    def latency(begin: float, end: float) -> str:
        window = sorted(o[1] * 1000 for o in outcomes if begin <= o[0] <= end)
        if not window:
            return "no requests"
        return f"{len(window)} requests, p50 {window[len(window) // 2]:.1f} ms, max {window[-1]:.1f} ms"

    say(
        f"zero-downtime stream: {len(outcomes)} unpinned predicts, {len(failures)} failed; "
        f"switch {V1}->{V2}: {latency(switch_began, switch_ended)}; "
        f"rollback {V3}->{V2}: {latency(rollback_began, rollback_ended)}"
    )
    assert outcomes and failures == []
