"""A serving fleet for real: two TF Serving containers behind Debian's nginx, released host by host.

Clients hammer nginx (64 concurrent, loopback only, bounded in count and time) while the release
operator rolls a version over both hosts with a spec change (each container is recreated while
drained), then rolls out a model whose canary fails: it stops at host 1, which goes back to the
stable version, and host 2 is never touched. Not one client request may fail.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.serving.conftest import free_port, say
from tests.serving.models import export_model, publish_copy, synthetic_images

pytestmark = pytest.mark.docker
V1, V2, V3 = 2024020100, 2024020200, 2024020300
HOSTS = ("serving-1", "serving-2")
CLIENTS = 64
CHANGED = ("--rest_api_timeout_in_ms=30001",)  # a flag that changes the container's spec


@pytest.fixture(scope="module")
def fleet_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good and a constant (canary-failing) model, each with its warmup records."""
    root = tmp_path_factory.mktemp("fleet-models")
    return {kind: export_model(root / kind, kind, warmup=True) for kind in ("good", "constant", "big")}


class FakeTI:
    """The task instance a mapped copy sees: its index, and the states of the other copies."""

    def __init__(self, index: int, states: dict[str, str]) -> None:
        self.dag_id, self.task_id, self.map_index, self.try_number = "tfship_daily", "release_host", index, 1
        self.log_url = f"http://localhost:8080/dags/tfship_daily/runs/r/tasks/release_host/mapped/{index}"
        self.states, self.pushed = states, {}

    def get_task_states(self, dag_id, task_ids, run_ids):
        return {run_ids[0]: self.states}

    def xcom_push(self, key, value):
        self.pushed[key] = value


class Fleet:
    """Two hosts (serving dirs, ports) and the nginx in front of them."""

    def __init__(self, tmp_path: Path, model: str, image: str, docker_url: str, nginx) -> None:
        from tfship.config import ServingHost

        self.model, self.image, self.docker_url, self.nginx = model, image, docker_url, nginx
        self.hosts = [
            ServingHost(name, str(tmp_path / name / model), "127.0.0.1", free_port(), free_port()) for name in HOSTS
        ]
        self.states: dict[str, str] = {}

    def release(self, index: int, version: int, **extra):
        from tfship_airflow.rollout import ReleaseHostOperator

        host = self.hosts[index]
        operator = ReleaseHostOperator(
            task_id="release_host",
            model=self.model,
            host=host.name,
            serving_dir=host.serving_dir,
            version=version,
            hosts=self.hosts,
            image=self.image,
            docker_url=self.docker_url,
            balancer_dir=str(self.nginx.conf_dir),
            balancer_reload=self.nginx.reload_spec,
            drain_s=1.0,
            available_timeout_s=300,
            latency_budget_ms=60_000,
            **extra,
        )
        ti = FakeTI(index, dict(self.states))
        try:
            result = operator.execute({"ti": ti, "run_id": f"manual__{version}"})
            self.states[f"release_host_{index}"] = "success"
            return result, ti
        except Exception:
            self.states[f"release_host_{index}"] = "failed"
            raise


class Load:
    """CLIENTS threads posting 1-row predicts to nginx until stopped (at most `limit` requests, `max_s` seconds).

    Each client keeps its connection alive and, like any careful client of an idempotent call, sends a
    request once more on a new connection when the old one was closed before any byte of an answer
    came back: a balancer reload closes idle keep-alive connections, and a request can cross that
    close in flight. Those are counted (`resent`); every other error is a failure.
    """

    def __init__(self, url: str, model: str, limit: int = 200_000, max_s: float = 900) -> None:
        images, _ = synthetic_images(1, seed=3)
        self.payload = json.dumps({"instances": images.astype(int).tolist()})
        self.url, self.limit, self.deadline = f"{url}/v1/models/{model}:predict", limit, time.monotonic() + max_s
        self.outcomes: list[tuple[float, int, str]] = []  # (latency s, status, error)
        self.resent = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _post(self, session: requests.Session) -> requests.Response:
        try:
            return session.post(self.url, data=self.payload, timeout=60)
        except requests.ConnectionError as err:
            # urllib3's "Connection aborted." is a close (or reset) before any byte of the answer; all else fails.
            if "Connection aborted." not in str(err):
                raise
            self.resent += 1
            return session.post(self.url, data=self.payload, timeout=60)

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set() and len(self.outcomes) < self.limit and time.monotonic() < self.deadline:
            began = time.monotonic()
            try:
                answer = self._post(session)
                ok = answer.status_code == 200 and len(answer.json()["predictions"]) == 1
                self.outcomes.append((time.monotonic() - began, answer.status_code, "" if ok else answer.text[:200]))
            except requests.RequestException as err:
                self.outcomes.append((time.monotonic() - began, 0, str(err)[:200]))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def percentile(self, share: float) -> float:
        latencies = sorted(latency for latency, _, _ in self.outcomes)
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000


@pytest.fixture
def fleet(tmp_path, serving_image, docker_base_url, serving_model, docker_api):
    from harness.nginx import NginxBalancer
    from tfship.serving.balancer import Backend

    nginx = NginxBalancer(tmp_path / "nginx", [])
    fleet = Fleet(tmp_path, serving_model, serving_image, docker_base_url, nginx)
    nginx.backends = [Backend(h.name, h.address, h.rest_port, h.grpc_port) for h in fleet.hosts]
    nginx.start()
    yield fleet
    nginx.stop()


def test_rolling_release_behind_nginx_with_zero_failed_requests(fleet, fleet_models, docker_api):
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    def publish(version: int, kind: str) -> None:  # what publish_model does on every host before the rollout
        for host in fleet.hosts:
            publish_copy(fleet_models[kind], Path(host.serving_dir), version)

    publish(V1, "good")
    for index in range(2):
        assert fleet.release(index, V1)[0]["step"] == "promoted"
    fleet.states.clear()

    with Load(fleet.nginx.url, fleet.model) as load:
        time.sleep(3)
        # A new version with a spec change: each container is recreated while its host is drained.
        publish(V2, "good")
        for index in range(2):
            released, _ = fleet.release(index, V2, extra_flags=CHANGED)
            assert (released["step"], released["deploy"]["action"], released["labels"]) == (
                "promoted",
                "recreated",
                {"canary": V2, "stable": V2},
            )
            assert released["memory"]["peak_mb"] > 0 and released["order"] == index
        fleet.states.clear()
        # A model that fails its canary: host 1 goes back to V2 and the rollout stops there.
        publish(V3, "constant")
        with pytest.raises(AirflowFailException, match="rollout stops here"):
            fleet.release(0, V3, extra_flags=CHANGED)
        with pytest.raises(AirflowSkipException, match="rollout stopped at an earlier host"):
            fleet.release(1, V3, extra_flags=CHANGED)
        time.sleep(3)

    failures = [o for o in load.outcomes if o[2]]
    say(
        f"rolling release behind nginx: {len(load.outcomes)} predicts from {CLIENTS} clients, {len(failures)} failed "
        f"({load.resent} sent again after a keep-alive connection closed by a balancer reload), "
        f"p50 {load.percentile(0.5):.1f} ms, p99 {load.percentile(0.99):.1f} ms"
    )
    assert len(load.outcomes) > 500 and failures == [], failures[:5]

    first, second = (Path(host.serving_dir) for host in fleet.hosts)
    assert json.loads((first / "serving.json").read_text()) == {"versions": [V2], "labels": {"stable": V2}}
    assert (first / ".rejected" / str(V3)).is_dir()
    # Host 2 never saw V3: still stable on V2, V3 still only a published directory.
    assert json.loads((second / "serving.json").read_text())["labels"] == {"canary": V2, "stable": V2}
    assert (second / str(V3)).is_dir() and not (second / ".rejected").exists()
    # Both upstreams answered through nginx, and the access log names them with their latency.
    answered = {line.split("upstream=")[1].split()[0] for line in fleet.nginx.access_log() if "upstream=" in line}
    assert {f"127.0.0.1:{host.rest_port}" for host in fleet.hosts} <= answered
    # The warmup was replayed by the server before each version became AVAILABLE.
    container = docker_api.containers(filters={"name": f"tfserving-{fleet.model}-serving-1"})[0]
    logs = docker_api.logs(container["Id"]).decode(errors="replace")
    assert "Number of warmup records read: 8." in logs


def test_a_host_too_small_for_two_versions_is_refused(fleet, fleet_models):
    from airflow.sdk.exceptions import AirflowFailException

    host = Path(fleet.hosts[0].serving_dir)
    publish_copy(fleet_models["big"], host, V1)  # 60 MB of weights each: about 180 MB loaded
    assert fleet.release(0, V1)[0]["step"] == "promoted"
    publish_copy(fleet_models["big"], host, V2)
    refused = r"host serving-1: .*memory limit of 315 MB cannot hold two versions"
    with pytest.raises(AirflowFailException, match=refused):
        fleet.release(0, V2, memory_limit="300m")
    assert json.loads((host / "serving.json").read_text())["labels"] == {"canary": V1, "stable": V1}
    assert fleet.nginx.backends and json.loads((fleet.nginx.conf_dir / "drained.json").read_text()) == []


def test_gRPC_canary_and_labels_follow_the_release(fleet, fleet_models):
    host = fleet.hosts[0]
    publish_copy(fleet_models["good"], Path(host.serving_dir), V1)
    released, _ = fleet.release(0, V1, canary_protocol="grpc")
    assert released["canary"]["passed"] and released["canary"]["url"].startswith("grpc://")
    stable = requests.get(f"{host.rest_url}/v1/models/{fleet.model}/labels/stable/metadata", timeout=30).json()
    assert stable["model_spec"]["version"] == str(V1)


def test_a_dead_host_is_retried_on_the_other_for_rest_and_grpc(fleet, fleet_models, docker_api):
    from tfship.serving.grpc_client import GrpcServingClient

    for index, host in enumerate(fleet.hosts):
        publish_copy(fleet_models["good"], Path(host.serving_dir), V1)
        assert fleet.release(index, V1)[0]["step"] == "promoted"
    # Host 2 dies while in rotation: nginx sends its share of predicts (POSTs included) to host 1.
    [dead] = docker_api.containers(filters={"name": f"tfserving-{fleet.model}-serving-2"})
    docker_api.stop(dead["Id"], timeout=0)
    rows = synthetic_images(1, seed=4)[0].astype(int).tolist()
    session = requests.Session()
    codes = [
        session.post(
            f"{fleet.nginx.url}/v1/models/{fleet.model}:predict", json={"instances": rows}, timeout=30
        ).status_code
        for _ in range(40)
    ]
    grpc = GrpcServingClient(fleet.nginx.grpc_target, fleet.model)
    try:
        grpc_codes = [grpc.predict(rows)[0] for _ in range(10)]
    finally:
        grpc.close()
    assert codes == [200] * 40 and grpc_codes == [200] * 10
    first, second = (f"127.0.0.1:{host.rest_port}" for host in fleet.hosts)
    retried = [line for line in fleet.nginx.access_log() if f"upstream={second}, {first}" in line]
    assert retried, fleet.nginx.access_log()[-5:]  # the dead host was tried, then the live one answered
