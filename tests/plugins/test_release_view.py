"""The release view: its HTTP routes, the report operator, the task link, and the plugin as Airflow loads it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest

from tests.airflow_support import register_dag
from tfship.config import ServingHost, StorageConfig
from tfship.report.record import release_record, write_release_record
from tfship.storage import LocalStorage

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-03-04"
RUN = "scheduled__2026-03-04T00:00:00+00:00"
CANDIDATE = "models/mnist/candidates/2026-03-04-0123abcd"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24 + b"tfship-test-plot"
TRAIN = {"candidate": CANDIDATE, "candidate_uri": f"file:///x/{CANDIDATE}", "digest": "0123abcd" * 4, "reused": False,
         "eval_accuracy": 0.9712, "eval_loss": 0.0931}  # fmt: skip
PUBLISH = {"publish": True, "reason": "accuracy 0.9712 >= floor 0.9000", "candidate_accuracy": 0.9712,
           "served_accuracy": 0.965, "served_version": 2026030300, "forced": False}  # fmt: skip
HOLD = dict(PUBLISH, publish=False, reason="accuracy 0.8000 < floor 0.9000", candidate_accuracy=0.8)
CANARY = {"host": "local", "run_id": RUN, "model": "mnist", "version": 2026030400, "passed": True,
          "failed_checks": [], "accuracy": 0.97, "argmax_agreement": 1.0,
          "latency_ms": {"p50": 11.2, "p95": 20.5, "p99": 31.7, "max": 33.0}}  # fmt: skip


def free_port() -> int:
    """A port nothing listens on (bound once by the OS, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A file:// storage root with one released run and its candidate plots; one serving host, 'local'."""
    root = tmp_path / "storage"
    root.mkdir()
    serving_dir = tmp_path / "serving" / "mnist"
    serving_dir.mkdir(parents=True)
    monkeypatch.setenv("TFSHIP_STORAGE_ROOT", f"file://{root}")
    monkeypatch.setenv("TFSHIP_SERVING_DIR", f"local={serving_dir}")
    monkeypatch.setenv("TFSHIP_MODEL", "mnist")
    monkeypatch.setenv("TFSHIP_SERVING_REST_PORT", str(free_port()))
    storage = LocalStorage(f"file://{root}")
    for name in ("cv_results.png", "training.png"):
        with storage.open_write(f"{CANDIDATE}/{name}") as handle:
            handle.write(PNG + name.encode())
    with storage.open_write(f"{CANDIDATE}/saved_model.pb") as handle:
        handle.write(b"weights")
    record = release_record(model="mnist", day=DAY, run_id=RUN, hosts=["local"], train=TRAIN, decision=PUBLISH,
                            published=[2026030400], deploys=[{"version": 2026030400}], canaries=[CANARY])  # fmt: skip
    write_release_record(storage, record)
    return SimpleNamespace(root=root, storage=storage, serving_dir=serving_dir, tmp=tmp_path)


@pytest.fixture
def client(env):
    """The plugin's app mounted at /tfship as the api-server mounts it; login is Airflow's, overridden here."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tfship_airflow.release_app import create_app

    app = create_app()
    app.dependency_overrides[app.state.login] = lambda: None
    parent = FastAPI()
    parent.mount("/tfship", app)
    return TestClient(parent)


class StubServing(BaseHTTPRequestHandler):
    """TF Serving's REST status for model mnist: version 2026030400 AVAILABLE."""

    def do_GET(self):
        if self.path != "/v1/models/mnist":
            self.send_error(404)
            return
        body = json.dumps({"model_version_status": [
            {"version": "2026030400", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        ]}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# ---------------------------------------------------------------- routes


def test_page_renders_records_and_an_unreachable_host(client):
    answer = client.get("/tfship/releases")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "script-src" not in answer.headers["content-security-policy"]
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    page = answer.text
    assert RUN in page
    assert 'id="served-local" class="served num" data-version=""' in page
    assert "UNREACHABLE" in page
    expected = "/tfship/releases/artifact?candidate=models%2Fmnist%2Fcandidates%2F2026-03-04-0123abcd&amp;file="
    assert f'src="{expected}cv_results.png"' in page
    assert f'src="{expected}training.png"' in page


def test_page_shows_the_version_a_live_server_reports(client, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubServing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("TFSHIP_SERVING_REST_PORT", str(server.server_address[1]))
        page = client.get("/tfship/releases", params={"run_id": RUN}).text
    finally:
        server.shutdown()
        server.server_close()
    assert 'id="served-local" class="served num" data-version="2026030400">2026030400</td>' in page
    assert "AVAILABLE" in page and "UNREACHABLE" not in page
    assert '<tr class="run selected"' in page


def test_bad_model_and_bad_port_are_said(client, monkeypatch):
    answer = client.get("/tfship/releases", params={"model": "../etc"})
    assert answer.status_code == 400
    assert "model name '../etc'" in answer.json()["detail"]
    monkeypatch.setenv("TFSHIP_SERVING_REST_PORT", "http")
    answer = client.get("/tfship/releases")
    assert answer.status_code == 500
    assert "TFSHIP_SERVING_REST_PORT='http' is not a TCP port" in answer.json()["detail"]
    monkeypatch.setenv("TFSHIP_SERVING_DIR", "local=relative/dir")
    answer = client.get("/tfship/releases.json")
    assert answer.status_code == 500
    assert answer.json()["detail"].startswith("tfship configuration: serving target 'local=relative/dir'")


def test_records_as_json(client, env):
    held = release_record(model="mnist", day="2026-03-05", run_id="manual__held", hosts=["local"], train=TRAIN,
                          decision=HOLD)  # fmt: skip
    write_release_record(env.storage, held)
    (env.root / "releases/mnist/2026-03-05/broken.json").write_text("{")
    body = client.get("/tfship/releases.json").json()
    assert body["model"] == "mnist"
    assert [(r["run_id"], r["status"]) for r in body["records"]] == [("manual__held", "held"), (RUN, "released")]
    assert len(body["skipped"]) == 1 and "broken.json" in body["skipped"][0]
    assert client.get("/tfship/releases.json", params={"model": "other"}).json()["records"] == []


def test_artifact_route_serves_a_candidate_plot(client):
    answer = client.get("/tfship/releases/artifact", params={"candidate": CANDIDATE, "file": "cv_results.png"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    assert answer.content == PNG + b"cv_results.png"


@pytest.mark.parametrize(
    ("candidate", "file", "status"),
    [
        ("models/mnist/candidates/../../../etc", "cv_results.png", 400),
        (f"{CANDIDATE}/../2026-03-05-0123abcd", "cv_results.png", 400),
        ("/etc", "cv_results.png", 400),
        ("../storage/" + CANDIDATE, "cv_results.png", 400),
        ("features/mnist/dt=2026-03-04", "cv_results.png", 400),
        ("releases/mnist/2026-03-04", "cv_results.png", 400),
        (CANDIDATE, "saved_model.pb", 404),
        (CANDIDATE, "../../../../etc/passwd", 404),
        ("models/mnist/candidates/2026-03-04-ffffffff", "cv_results.png", 404),
        (CANDIDATE, "metrics.json", 404),  # allowed name, but this candidate has none
    ],
)
def test_artifact_route_refuses_everything_else(client, candidate, file, status):
    answer = client.get("/tfship/releases/artifact", params={"candidate": candidate, "file": file})
    assert answer.status_code == status
    assert answer.json()["detail"]  # a message that says why
    assert b"weights" not in answer.content


def test_every_route_needs_an_airflow_login(env):
    from fastapi.testclient import TestClient

    from tfship_airflow.release_app import create_app

    bare = TestClient(create_app())  # Airflow's own dependency: no session cookie, no bearer token
    for path in ("/releases", "/releases.json", f"/releases/artifact?candidate={CANDIDATE}&file=cv_results.png"):
        answer = bare.get(path)
        assert answer.status_code == 401, path


# ---------------------------------------------------------------- the link


def test_link_is_relative_without_a_base_url_and_absolute_with_one(monkeypatch):
    from tfship_airflow.release_view import ReleaseViewLink

    operator = SimpleNamespace(model="mnist")
    key = SimpleNamespace(run_id="manual__2026-03-04T10:00:00+00:00", dag_id="tfship_daily", task_id="t")
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    link = ReleaseViewLink()
    assert link.name == "Release view"
    assert link.xcom_key == "_link_ReleaseViewLink"
    assert link.get_link(operator, ti_key=key) == (
        "/tfship/releases?model=mnist&run_id=manual__2026-03-04T10%3A00%3A00%2B00%3A00"
    )
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/af/")
    assert link.get_link(operator, ti_key=key) == (
        "https://airflow.example.com/af/tfship/releases?model=mnist&run_id=manual__2026-03-04T10%3A00%3A00%2B00%3A00"
    )


def test_link_is_serialized_as_an_xcom_backed_link_on_both_operators():
    from airflow.sdk import DAG
    from airflow.serialization.definitions.operatorlink import XComOperatorLink
    from airflow.serialization.serialized_objects import DagSerialization

    from tfship_airflow.canary import CanaryServingOperator
    from tfship_airflow.report import ReleaseReportOperator

    with DAG(dag_id="links", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        CanaryServingOperator.partial(task_id="canary_serving", model="mnist", version=1).expand_kwargs(
            [{"host": "local", "serving_dir": "/srv/mnist"}]
        )
        storage = StorageConfig("file:///srv/storage")
        ReleaseReportOperator(task_id="report_release", day=DAY, model="mnist", hosts=[], storage=storage)
    encoded = DagSerialization.to_dict(dag)
    tasks = {task["__var"]["task_id"]: task["__var"] for task in encoded["dag"]["tasks"]}
    for task_id in ("canary_serving", "report_release"):
        assert tasks[task_id]["_operator_extra_links"] == {"Release view": "_link_ReleaseViewLink"}
    # What the api-server rebuilds: a link that reads the XCom the task runner stored.
    decoded = DagSerialization.from_dict(encoded)
    for task_id in ("canary_serving", "report_release"):
        link = decoded.get_task(task_id).operator_extra_link_dict["Release view"]
        assert isinstance(link, XComOperatorLink) and link.xcom_key == "_link_ReleaseViewLink"


# ---------------------------------------------------------------- the report operator


class FakeTI:
    """The task instance the report reads its DAG id from."""

    dag_id = "tfship_daily"


def report(env, hosts=("local",), **results):
    from tfship_airflow.report import ReleaseReportOperator

    serving = [ServingHost(name, str(env.serving_dir if name == "local" else env.tmp / name)) for name in hosts]
    storage = StorageConfig(f"file://{env.root}")
    return ReleaseReportOperator(
        task_id="report_release", day=DAY, model="mnist", hosts=serving, storage=storage, **results
    )


def test_report_of_a_held_run_is_written(env):
    record = report(env, candidate=TRAIN, decision=HOLD).execute({"ti": FakeTI(), "run_id": "manual__held"})
    assert record["status"] == "held"
    assert [(h["host"], h["status"]) for h in record["hosts"]] == [("local", "skipped")]
    [written] = (env.root / "releases/mnist" / DAY).glob("manual__held-*.json")
    assert json.loads(written.read_text()) == record


def test_report_reads_a_failed_canary_back_from_the_release_log(env):
    rollback = {"rejected": [2026030400], "moved_to": [], "serving": 2026030300, "previous_canary": None}
    line = dict(CANARY, event="canary", recorded_at="2026-03-05T01:00:00+00:00", passed=False,
                failed_checks=["accuracy"], rollback=rollback)  # fmt: skip
    (env.serving_dir / "releases.jsonl").write_text(json.dumps({"version": 2026030400}) + "\n" + json.dumps(line))
    operator = report(
        env,
        hosts=("local", "serve-b"),
        candidate=TRAIN,
        decision=PUBLISH,
        # serve-b published, then its deploy failed: what the mapped outputs hold, in no particular order
        publications=[{"host": "serve-b", "version": 2026030400}, {"host": "local", "version": 2026030400}],
        deployments=[{"host": "local", "version": 2026030400, "action": "kept"}],
    )
    record = operator.execute({"ti": FakeTI(), "run_id": RUN})
    assert record["status"] == "failed"
    local, remote = record["hosts"]
    assert (local["status"], local["canary"]["failed_checks"]) == ("rolled back", ["accuracy"])
    assert remote["status"] == "not deployed"
    assert record["summary"] == (
        "canary failed on local (accuracy): rolled back, version 2026030300 serves again; serve-b: not deployed"
    )


def test_report_without_a_day_records_nothing_but_falls_back_to_the_interval(env):
    operator = report(env)
    operator.day = None  # resolve_day failed: its XCom resolves to nothing
    ti = FakeTI()
    assert operator.execute({"ti": ti, "run_id": "r1", "params": {}}) is None
    start = pendulum.datetime(2026, 3, 6, tz="UTC")
    record = operator.execute({"ti": ti, "run_id": "r2", "params": {"day": None}, "data_interval_start": start})
    assert (record["day"], record["status"]) == ("2026-03-06", "failed")
    assert sorted(p.name for p in (env.root / "releases/mnist").iterdir()) == ["2026-03-04", "2026-03-06"]
    assert not list(env.root.glob("releases/mnist/*/r1-*.json"))


# ---------------------------------------------------------------- the plugin in Airflow

DISCOVER = """
import json
from airflow import plugins_manager
from airflow.api_fastapi.core_api.datamodels.plugins import PluginResponse

plugins, errors = plugins_manager._get_plugins()
apps, _ = plugins_manager.get_fastapi_plugins()
info = [PluginResponse.model_validate(d).model_dump() for d in plugins_manager.get_plugin_info()]
print(json.dumps({
    "errors": errors,
    "names": [p.name for p in plugins],
    "apps": [(a["url_prefix"], type(a["app"]).__name__) for a in apps],
    "info": [i for i in info if i["name"] == "tfship"],
}, default=str))
"""


def test_airflow_plugins_manager_discovers_the_app_and_the_nav_entry(tmp_path):
    # A fresh process: the plugins manager caches, and imports plugin files under their bare names.
    done = subprocess.run([sys.executable, "-c", DISCOVER], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}
    assert found["names"].count("tfship") == 1
    assert ["/tfship", "FastAPI"] in found["apps"]
    [info] = found["info"]
    assert info["external_views"] == [
        {"name": "Releases", "icon": None, "icon_dark_mode": None, "url_route": None, "category": "browse",
         "nav_top_level": False, "href": "/tfship/releases", "destination": "nav"}
    ]  # fmt: skip
    assert info["source"] == "$PLUGINS_FOLDER/tfship_airflow/ui_plugin.py"


# ---------------------------------------------------------------- a real run


@pytest.mark.airflow
def test_real_run_records_a_held_release_and_the_api_serves_its_link(env):
    """dag.test() runs tasks through the task runner's run() + finalize(), as a worker does."""
    from airflow.sdk import DAG, task

    from tfship_airflow.report import ReleaseReportOperator

    hosts = [ServingHost("local", str(env.serving_dir))]
    storage = StorageConfig(f"file://{env.root}")
    with DAG(
        dag_id="tfship_release_view_test",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"day": DAY},
    ) as dag:

        @task(multiple_outputs=False)
        def train() -> dict:
            return TRAIN

        # ignore_downstream_trigger_rules=False: only the direct downstream (publish) is skipped, so the
        # all_done report still runs; with the default the short circuit skips every downstream task.
        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def evaluate(candidate: dict, **context) -> bool:
            context["ti"].xcom_push(key="decision", value=HOLD)
            return False

        @task(multiple_outputs=False)
        def publish_model(host: str) -> dict:
            return {"host": host, "version": 2026030400}

        @task(multiple_outputs=False)
        def canary_serving(host: str) -> dict:
            return CANARY

        trained = train()
        gate = evaluate(trained)
        published = publish_model.expand(host=["local"])
        canaries = canary_serving.expand(host=["local"])
        gate >> published >> canaries
        # Its inputs make it a direct downstream of the short circuit, which spares only teardowns.
        ReleaseReportOperator(
            task_id="report_release",
            day="{{ params.day }}",
            model="mnist",
            hosts=hosts,
            storage=storage,
            candidate=trained,
            decision=gate["decision"],
            publications=published,
            canaries=canaries,
        ).as_teardown(setups=trained.operator)
        # Wired directly under the short circuit, the report is skipped with publication: avoid this.
        gate >> ReleaseReportOperator(
            task_id="report_direct", day=DAY, model="mnist", hosts=hosts, storage=storage, trigger_rule="all_done"
        )
    register_dag(dag)
    run = dag.test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["report_release"] == "success"
    assert states["report_direct"] == "skipped"
    [written] = (env.root / "releases/mnist" / DAY).glob("manual__*.json")
    assert json.loads(written.read_text())["status"] == "held"

    # The api-server side: the link the task runner stored, and the page, through Airflow's own app.
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    api = TestClient(create_app())
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    auth = {"Authorization": f"Bearer {token}"}
    links = api.get(f"/api/v2/dags/{dag.dag_id}/dagRuns/{run.run_id}/taskInstances/report_release/links", headers=auth)
    assert links.status_code == 200, links.text
    assert links.json()["extra_links"] == {
        "Release view": f"/tfship/releases?model=mnist&run_id={run.run_id.replace(':', '%3A').replace('+', '%2B')}"
    }
    assert api.get("/tfship/releases").status_code == 401
    page = api.get("/tfship/releases", params={"run_id": run.run_id}, headers=auth)
    assert page.status_code == 200
    assert f'data-run-id="{run.run_id}" data-status="held"' in page.text
