"""Fixtures for serving tests: tiny models, stand-in processes, the serving image, containers, a webhook."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.nginx import free_port  # the serving tests' port picker (re-exported)
from harness.webhook import WebhookReceiver
from tests.notes import say
from tests.serving.models import export_model

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One good, one constant-output and one variables-missing model, exported once per session."""
    root = tmp_path_factory.mktemp("model-store")
    return {kind: export_model(root / kind, kind) for kind in ("good", "constant", "no_variables")}


class StandinProcess:
    """The stand-in server as a local process on loopback (SIGTERM is ignored, like the real server)."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.log_path = log_path
        env = dict(os.environ, PYTHONPATH=f"{PROJECT_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving_standin.server", f"--port={self.grpc_port}",
             f"--rest_api_port={self.rest_port}", *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the stand-in never printed {text!r}:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def wait_until_open(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.rest_port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the stand-in REST port never opened:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._log.close()


@pytest.fixture
def start_standin(tmp_path: Path) -> Iterator[Callable[..., StandinProcess]]:
    """Start stand-in processes with the given flags; all are killed at teardown."""
    started: list[StandinProcess] = []

    def start(*args: str) -> StandinProcess:
        process = StandinProcess(list(args), tmp_path / f"standin-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def serving_image(docker_base_url: str) -> str:
    """The real tensorflow/serving image when present locally, else the stand-in (built if needed)."""
    import docker
    from serving_standin.build import build_image

    from tfship.serving.container import REAL_IMAGE, choose_image

    api = docker.APIClient(base_url=docker_base_url, version="auto")
    try:
        started = time.monotonic()
        image = choose_image(api, build_standin=lambda: build_image(docker_base_url))
    finally:
        api.close()
    which = "the REAL image" if image == REAL_IMAGE else f"the STAND-IN (no {REAL_IMAGE} here)"
    say(f"TF SERVING IMAGE: {image} -- {which}; ready after {time.monotonic() - started:.1f}s")
    return image


@pytest.fixture
def docker_api(docker_base_url: str) -> Iterator:
    """A low-level client (what DockerHook.get_conn() returns)."""
    import docker

    api = docker.APIClient(base_url=docker_base_url, version="auto", timeout=120)
    yield api
    api.close()


@pytest.fixture
def serving_model(request: pytest.FixtureRequest, docker_api) -> Iterator[str]:
    """A model name unique to the test; its containers are removed at teardown."""
    from tfship.serving.container import MODEL_LABEL

    name = "t-" + request.node.name.lower().replace("_", "-")[5:40].strip("-")

    def remove_ours() -> None:
        labelled = docker_api.containers(all=True, filters={"label": f"{MODEL_LABEL}={name}"})
        named = docker_api.containers(all=True, filters={"name": f"^/tfserving-{name}"})
        for container in {c["Id"]: c for c in [*labelled, *named]}.values():
            docker_api.remove_container(container["Id"], force=True)

    # Before too: a run killed mid-test (or a CI clone on the same engine) leaves containers with these names.
    remove_ours()
    yield name
    remove_ours()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    """A local alert receiver, and the alert connection pointed at it."""
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TFSHIP_ALERT_WEBHOOK", receiver.connection_json())
        yield receiver


def fake_context(task_id: str) -> dict:
    """What the operators read from the task context."""
    ti = SimpleNamespace(
        dag_id="tfship_daily", task_id=task_id, map_index=0, try_number=1,
        log_url=f"http://localhost:8080/dags/tfship_daily/runs/r/tasks/{task_id}",
    )  # fmt: skip
    return {"ti": ti, "run_id": "manual__serving-test"}
