"""The compose stack as a user brings it up: `scripts/stack up` (make stack-up), then its parts.

Images come from `python -m stack.images` (cached by content hash: a fresh machine builds them
once, about 20 minutes, later runs find them). The stack runs under its own compose project
name and free host ports, so a user's own `tfship` stack on the same engine is left alone; it
is torn down with its volumes at the end.
"""

from __future__ import annotations

import hashlib
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
        # The killed serving host's task is failed (then retried) a minute after its last heartbeat.
        "TFSHIP_STACK_HEARTBEAT_TIMEOUT_S": "60",
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
SERVING_DIR = "/srv/tfserving/mnist"
# About 30 s for the ~1.6 MB candidate: a window wide enough to kill a host in the middle of it.
PUBLISH_RATE_BPS = 50_000
ARTIFACTS = Path(os.environ.get("TFSHIP_ARTIFACTS_DIR", PROJECT_ROOT / "var" / "artifacts"))


def _staged_files(stack: Stack, host: str) -> list[str]:
    """Files under the host's `.staging-*` directories (a publication in progress), read in its container."""
    done = stack.compose(
        "exec", "-T", host, "find", SERVING_DIR, "-mindepth", "2", "-path", f"{SERVING_DIR}/.staging-*", "-type", "f"
    )  # fmt: skip
    return done.stdout.split() if done.returncode == 0 else []


@pytest.fixture(scope="module")
def daily_run(stack) -> dict:
    """The daily run on the stack, with serving-2's worker killed in the middle of its publication.

    The sample day goes in through the HttpFS gateways, as a producer outside the stack would; the
    run is triggered through the REST API with the admin login. Once serving-2's copy has files in
    its staging directory, that host's Celery worker container is killed (SIGKILL, as a lost
    machine) and started again, and the task is cleared through the REST API.
    """
    import datetime as dt

    from tfship.data.sampledata import write_day
    from tfship.storage import WebHdfsStorage

    storage = WebHdfsStorage("hdfs://namenode:8020/tfship", stack.httpfs, user="airflow")
    write_day(storage, dt.date.fromisoformat(DAY), rows=4000)
    conf = {"day": DAY, "publish_rate_bps": PUBLISH_RATE_BPS}
    run = stack.api(
        "/api/v2/dags/tfship_daily/dagRuns", {"dag_run_id": f"stack-test-{DAY}", "logical_date": None, "conf": conf}
    )
    started = time.monotonic()
    path = f"/api/v2/dags/tfship_daily/dagRuns/{run['dag_run_id']}"
    copy = f"{path}/taskInstances/publish_model/1"

    def publishing() -> list[str] | None:
        state = stack.api(copy)["state"]
        if state in ("success", "failed", "upstream_failed", "skipped", "removed"):
            run_state = stack.api(path)["state"]
            raise AssertionError(f"serving-2's copy ended ({state}, run {run_state}) before its staging was seen")
        if state != "running":
            return None
        return _staged_files(stack, "serving-2") or None

    staged = _until("serving-2's copy of publish_model to have staged files", publishing, 2400, every_s=1)
    killed = stack.env["TFSHIP_STACK_PROJECT"] + "-serving-2"
    done = subprocess.run(["docker", "kill", killed], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    say(f"stack: killed {killed} with {len(staged)} files staged, {time.monotonic() - started:.0f}s into the run")
    subprocess.run(["docker", "start", killed], capture_output=True, text=True, check=True)
    cleared = stack.api(
        "/api/v2/dags/tfship_daily/clearTaskInstances",
        {"dry_run": False, "dag_run_id": run["dag_run_id"], "task_ids": [["publish_model", 1]], "only_failed": False},
    )  # fmt: skip
    finished = _until(
        "the triggered run to finish",
        lambda: (state := stack.api(path)["state"]) in ("success", "failed") and state,
        timeout_s=2400,
        every_s=10,
    )
    tis = stack.api(f"{path}/taskInstances?limit=100")["task_instances"]
    say(f"stack: the daily run (4,000 rows, one host killed) took {time.monotonic() - started:.0f}s to {finished}")
    return {"run_id": run["dag_run_id"], "state": finished, "tis": tis, "cleared": cleared, "staged": staged}


def _served(stack: Stack, host: str) -> list[str]:
    done = stack.compose("exec", "-T", host, "curl", "-fsS", f"http://{host}:8501/v1/models/mnist")
    assert done.returncode == 0, done.stdout + done.stderr
    return [v["version"] for v in json.loads(done.stdout)["model_version_status"] if v["state"] == "AVAILABLE"]


def _hdfs(base: str, path: str, op: str) -> bytes:
    with urllib.request.urlopen(f"{base}/webhdfs/v1{path}?op={op}&user.name=airflow", timeout=60) as answer:
        return answer.read()


def _listing(stack: Stack, path: str) -> dict[str, dict]:
    """A directory's entries as the NameNode lists them (metadata only: no DataNode is reached)."""
    statuses = json.loads(_hdfs(stack.namenode, path, "LISTSTATUS"))["FileStatuses"]["FileStatus"]
    return {status["pathSuffix"]: status for status in statuses}


def test_the_run_wrote_features_and_the_served_candidate_to_hdfs(stack, daily_run):
    features = f"/tfship/features/mnist/dt={DAY}"
    assert {"_SUCCESS", "train", "eval"} <= set(_listing(stack, features)), _listing(stack, features)
    shards = _listing(stack, f"{features}/train")
    assert shards and all(s["type"] == "FILE" and s["length"] > 0 for s in shards.values()), shards
    candidates = [name for name in _listing(stack, "/tfship/models/mnist/candidates") if name.startswith(DAY)]
    assert len(candidates) == 1, candidates
    # The bytes each host serves are the candidate's on HDFS (read back through a gateway).
    (served,) = _served(stack, "serving-1")
    on_hdfs = _hdfs(stack.httpfs[1], f"/tfship/models/mnist/candidates/{candidates[0]}/saved_model.pb", "OPEN")
    for host in ("serving-1", "serving-2"):
        done = stack.compose("exec", "-T", host, "md5sum", f"{SERVING_DIR}/{served}/saved_model.pb")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[0] == hashlib.md5(on_hdfs).hexdigest(), host


def test_the_daily_run_on_the_stack_publishes_to_both_hosts_and_nginx_answers(stack, daily_run):
    states = {(t["task_id"], t["map_index"]): (t["state"], t["queue"], t["hostname"]) for t in daily_run["tis"]}
    assert daily_run["state"] == "success", states
    # Each host's copies ran on its own queue, on its own worker; Spark ran on the default worker.
    for index, host in enumerate(("serving-1", "serving-2")):
        for task in ("publish_model", "release_host"):
            assert states[(task, index)] == ("success", host, host), (task, index, states[(task, index)])
    assert states[("preprocess", -1)][1:] == ("default", "worker")
    # Every host serves the new version from its own volume, and nginx answers from it.
    versions = {host: _served(stack, host) for host in ("serving-1", "serving-2")}
    assert all(len(v) == 1 for v in versions.values()), versions
    assert versions["serving-1"] == versions["serving-2"], versions
    assert versions["serving-1"][0].startswith(DAY.replace("-", "")), versions
    body = json.dumps({"instances": [[[[0.0]] * 28] * 28]}).encode()
    request = urllib.request.Request(
        f"{stack.rest}/v1/models/mnist:predict", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        predictions = json.loads(answer.read())["predictions"]
    assert len(predictions) == 1 and len(predictions[0]) == 10 and abs(sum(predictions[0]) - 1) < 1e-3


def test_the_killed_host_converges_to_the_new_version_with_no_staging_left(stack, daily_run):
    cleared = {(t["task_id"], t["map_index"]) for t in daily_run["cleared"]["task_instances"]}
    assert ("publish_model", 1) in cleared, daily_run["cleared"]
    copy = next(t for t in daily_run["tis"] if (t["task_id"], t["map_index"]) == ("publish_model", 1))
    assert copy["state"] == "success" and copy["try_number"] >= 2, copy
    listing = stack.compose("exec", "-T", "serving-2", "ls", "-A", SERVING_DIR)
    assert listing.returncode == 0, listing.stderr
    names = listing.stdout.split()
    assert not [n for n in names if n.startswith(".staging-")], names
    (served,) = _served(stack, "serving-2")
    assert served in names and _staged_files(stack, "serving-2") == []
    # The new version's files are whole: the same manifest digest on both hosts' disks.
    digests = {}
    for host in ("serving-1", "serving-2"):
        done = stack.compose(
            "exec", "-T", host, "sh", "-c", f"cd {SERVING_DIR}/{served} && find . -type f | sort | xargs md5sum"
        )
        assert done.returncode == 0, done.stderr
        digests[host] = done.stdout
    assert digests["serving-1"] == digests["serving-2"] and "saved_model.pb" in digests["serving-1"]
    # The api-server fetches the retried copy's log from serving-2's log server (a request signed with
    # the secret key the stack shares); the retry removed what the killed attempt had staged.
    logs = stack.api(
        f"/api/v2/dags/tfship_daily/dagRuns/{daily_run['run_id']}/taskInstances/publish_model/logs/"
        f"{copy['try_number']}?map_index=1&full_content=true"
    )
    text = json.dumps(logs)
    assert f"published version {served}" in text, text[-3000:]
    assert "left behind by an interrupted run" in text, text[-3000:]


def test_the_run_grid_in_the_stack_ui(stack, daily_run):
    from tests.browser.driver import run_ui

    shot = run_ui(
        "page", "--base-url", stack.ui, "--path", f"/dags/tfship_daily/runs/{daily_run['run_id']}",
        "--shots", str(ARTIFACTS), "--name", "stack-run-grid", "--expect-text", "publish_model",
        "--expect-text", "release_host", token=stack.token(),
    )  # fmt: skip
    assert shot["screenshot"].endswith("stack-run-grid.png") and Path(shot["screenshot"]).stat().st_size > 10_000
    assert "/login" not in shot["url"], shot["url"]
    say(f"stack: the run's grid from the stack's api-server: {shot['screenshot']}")
