"""The compose stack as a user brings it up: `scripts/stack up` (make stack-up), then its parts.

Images come from `python -m stack.images` (cached by content hash: a fresh machine builds them
once, about 20 minutes, later runs find them). The stack runs under its own compose project
name and free host ports, so a user's own `tfship` stack on the same engine is left alone; it
is torn down with its volumes at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.nginx import free_port
from tests.notes import say

pytestmark = [pytest.mark.docker, pytest.mark.stack]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "tfship-test"
GUARD_S = 3600  # a cold image build is ~20 min; this only stops a hung command


class Stack:
    """The running test stack: its ports, its REST API, commands in its containers."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.ui = f"http://127.0.0.1:{env['TFSHIP_STACK_UI_PORT']}"
        self.rest = f"http://127.0.0.1:{env['TFSHIP_STACK_REST_PORT']}"
        self.httpfs = [f"http://127.0.0.1:{env[f'TFSHIP_STACK_HTTPFS{i}_PORT']}" for i in (1, 2)]
        self.namenode = f"http://127.0.0.1:{env['TFSHIP_STACK_NAMENODE_PORT']}"
        self._token: str | None = None

    def run(self, *args: str, timeout: float = GUARD_S) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(PROJECT_ROOT / "scripts" / "stack"), *args],
            env=self.env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(PROJECT_ROOT / "scripts" / "compose"), "-p", PROJECT, "-f", "docker-compose.yaml", *args],
            env=self.env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def token(self) -> str:
        """A JWT from the api-server for the stack's admin login (a real password check)."""
        if self._token is None:
            body = json.dumps({"username": "admin", "password": self.env["TFSHIP_STACK_ADMIN_PASSWORD"]}).encode()
            request = urllib.request.Request(
                f"{self.ui}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                self._token = json.loads(answer.read())["access_token"]
        return self._token

    def api(self, path: str, body: dict | None = None, method: str | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.ui}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
            method=method or ("GET" if body is None else "POST"),
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"{}")


def _until(what: str, check, timeout_s: float, every_s: float = 3.0):
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            found = check()
            if found:
                return found
            last = found
        except (OSError, urllib.error.URLError, ValueError, KeyError) as err:
            last = err
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f}s (last: {last!r})")


@pytest.fixture(scope="module")
def stack(docker_base_url) -> Iterator[Stack]:
    env = {
        **os.environ,
        "TFSHIP_STACK_PROJECT": PROJECT,
        "TFSHIP_STACK_ADMIN_PASSWORD": "stack-test-password",
        # The scheduled run the unpaused DAG starts finds no data for yesterday: let it give up soon,
        # since it holds the DAG's one active run slot before the triggered run.
        "TFSHIP_RAW_WAIT_TIMEOUT_S": "60",
        **{
            f"TFSHIP_STACK_{name}_PORT": str(free_port())
            for name in ("UI", "REST", "GRPC", "NAMENODE", "HTTPFS1", "HTTPFS2")
        },
    }
    running = Stack(env)
    running.run("down", "--volumes", timeout=600)  # what a killed earlier run left
    started = time.monotonic()
    done = running.run("up")
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    say(f"stack: scripts/stack up (images cached or built, every service healthy) in {time.monotonic() - started:.0f}s")
    running.up_output = done.stdout  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.run("down", "--volumes", timeout=600)


def test_stack_up_prints_where_to_go_and_every_service_is_healthy(stack):
    for address in (stack.ui, stack.rest, stack.namenode, *stack.httpfs):
        assert address in stack.up_output, stack.up_output
    listing = stack.compose("ps", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    text = listing.stdout.strip()  # one object per line (newer compose) or one array
    services = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    state = {s["Service"]: (s["State"], s.get("Health", "")) for s in services}
    expected = {
        "postgres", "redis", "namenode", "datanode", "httpfs-1", "httpfs-2", "airflow-apiserver",
        "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "worker", "serving-1", "serving-2", "nginx",
    }  # fmt: skip
    assert expected <= set(state), sorted(state)
    unhealthy = {name: s for name, s in state.items() if name in expected and s != ("running", "healthy")}
    assert unhealthy == {}, unhealthy


def test_a_real_login_reaches_the_rest_api_and_the_daily_dag_is_there(stack):
    with pytest.raises(urllib.error.HTTPError) as refused:
        body = json.dumps({"username": "admin", "password": "wrong"}).encode()
        urllib.request.urlopen(
            urllib.request.Request(f"{stack.ui}/auth/token", data=body, headers={"Content-Type": "application/json"}),
            timeout=30,
        )
    assert refused.value.code in (401, 403)
    dag = _until("tfship_daily parsed by the dag-processor", lambda: stack.api("/api/v2/dags/tfship_daily"), 300)
    assert dag["dag_id"] == "tfship_daily" and not dag["has_import_errors"]


def test_each_worker_listens_on_its_own_queue(stack):
    queues = {}
    for service in ("worker", "serving-1", "serving-2"):
        done = stack.compose(
            "exec", "-T", service, "celery", "--app", "airflow.providers.celery.executors.celery_executor.app",
            "inspect", "active_queues", "-d", f"celery@{service}", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        queues[service] = sorted(q["name"] for q in answer[f"celery@{service}"])
    assert queues == {"worker": ["default"], "serving-1": ["serving-1"], "serving-2": ["serving-2"]}


def test_a_file_written_through_one_gateway_is_read_through_the_other_and_the_namenode(stack):
    payload = os.urandom(300_000)
    path = "/webhdfs/v1/tests/stack/blob.bin"
    create = urllib.request.Request(
        f"{stack.httpfs[0]}{path}?op=CREATE&user.name=airflow&overwrite=true&data=true",
        data=payload, headers={"Content-Type": "application/octet-stream"}, method="PUT",
    )  # fmt: skip
    with urllib.request.urlopen(create, timeout=60) as answer:
        assert answer.status == 201
    with urllib.request.urlopen(f"{stack.httpfs[1]}{path}?op=OPEN&user.name=airflow", timeout=60) as answer:
        assert answer.read() == payload
    status = f"{stack.namenode}{path}?op=GETFILESTATUS&user.name=airflow"
    with urllib.request.urlopen(status, timeout=60) as answer:
        assert json.loads(answer.read())["FileStatus"]["length"] == len(payload)


DAY = "2026-11-25"


def test_the_daily_run_on_the_stack_publishes_to_both_hosts_and_nginx_answers(stack):
    import datetime as dt

    from tfship.data.sampledata import write_day
    from tfship.storage import WebHdfsStorage

    # The sample day goes in through the HttpFS gateways, as a producer outside the stack would.
    storage = WebHdfsStorage("hdfs://namenode:8020/tfship", stack.httpfs, user="airflow")
    write_day(storage, dt.date.fromisoformat(DAY), rows=4000)
    run = stack.api(
        "/api/v2/dags/tfship_daily/dagRuns",
        {"dag_run_id": f"stack-test-{DAY}", "logical_date": None, "conf": {"day": DAY}},
    )
    started = time.monotonic()
    path = f"/api/v2/dags/tfship_daily/dagRuns/{run['dag_run_id']}"
    finished = _until(
        "the triggered run to finish",
        lambda: (state := stack.api(path)["state"]) in ("success", "failed") and state,
        timeout_s=2400,
        every_s=10,
    )
    tis = stack.api(f"{path}/taskInstances?limit=100")["task_instances"]
    states = {(t["task_id"], t["map_index"]): (t["state"], t["queue"], t["hostname"]) for t in tis}
    assert finished == "success", states
    say(f"stack: the daily run (4,000 rows) took {time.monotonic() - started:.0f}s from the REST trigger to success")
    # Each host's copies ran on its own queue, on its own worker.
    for index, host in enumerate(("serving-1", "serving-2")):
        for task in ("publish_model", "release_host"):
            assert states[(task, index)] == ("success", host, host), (task, index, states[(task, index)])
    assert states[("preprocess", -1)][1:] == ("default", "worker")
    # Every host serves the new version from its own volume, and nginx answers from it.
    versions = set()
    for host in ("serving-1", "serving-2"):
        done = stack.compose("exec", "-T", host, "curl", "-fsS", f"http://{host}:8501/v1/models/mnist")
        assert done.returncode == 0, done.stdout + done.stderr
        available = [v["version"] for v in json.loads(done.stdout)["model_version_status"] if v["state"] == "AVAILABLE"]
        assert len(available) == 1, (host, done.stdout)
        versions.add(available[0])
    assert len(versions) == 1 and next(iter(versions)).startswith(DAY.replace("-", "")), versions
    body = json.dumps({"instances": [[[[0.0]] * 28] * 28]}).encode()
    request = urllib.request.Request(
        f"{stack.rest}/v1/models/mnist:predict", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        predictions = json.loads(answer.read())["predictions"]
    assert len(predictions) == 1 and len(predictions[0]) == 10 and abs(sum(predictions[0]) - 1) < 1e-3
