"""The daily DAG under a real scheduler: scheduled days, a UI backfill, reruns after faults, alerts, Params.

One `airflow standalone` (SQLite, LocalExecutor) runs the project's DAG on generated days on
file:// and a real serving container. The schedule starts two days ago with catchup, so the
scheduler itself creates the two most recent daily runs; the test then backfills two earlier
days through the UI in headless Chromium. Faults are real: the publication's task process is
killed with SIGKILL after half its bytes, and the serving container is stopped while the canary
is due. The order of the tests below is the order of the story; each asserts on the state the
previous ones left; run alone, a test gets that state from the fixtures `scheduled_days` (the
scheduler runs both scheduled days, here without faults) and `backfilled_days` (a backfill made
through the REST API instead of the UI).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.airflow_server import AirflowServer
from harness.webhook import WebhookReceiver
from tfship.config import PROJECT_ROOT
from tfship.data.sampledata import write_day
from tfship.storage import LocalStorage

pytestmark = [pytest.mark.airflow, pytest.mark.scheduler, pytest.mark.docker]

DAG_ID = "tfship_daily"
ROWS = 1500
# Scheduled runs carry no conf: the environment's Param defaults make them small, and slow the
# publication down (150 kB/s, some 7 s for this model) so there is a window to kill it halfway.
SITE_PARAMS = {
    "cv_grid": [{"learning_rate": 0.01, "filters": 16, "dropout": 0.1}],
    "cv_folds": 2,
    "cv_epochs": 1,
    "epochs": 5,
    "replicas": 1,
    # The story is about operations, not model quality: a low floor keeps a small, fast model publishable.
    "accuracy_floor": 0.3,
    "accuracy_tolerance": 1.0,
    "publish_rate_bps": 150_000,
    "serving_timeout_s": 120,
}
TODAY = dt.datetime.now(dt.UTC).date()
SCHEDULED_DAYS = [TODAY - dt.timedelta(days=2), TODAY - dt.timedelta(days=1)]
BACKFILL_DAYS = [TODAY - dt.timedelta(days=n) for n in (4, 3)]  # two: enough to show order, one run less
# A serving host of its own (name, container `tfserving-mnist-ops`, ports), so the story runs beside
# the e2e tests' `local` host on the other pytest-xdist worker.
HOST = "ops"
CONTAINER = f"tfserving-mnist-{HOST}"
ARTIFACTS = Path(os.environ.get("TFSHIP_ARTIFACTS_DIR", PROJECT_ROOT / "var" / "artifacts")) / "scheduler"


def _version(day: dt.date) -> int:
    return int(day.strftime("%Y%m%d")) * 100


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Site:
    """What the tests share: the server, the storage root, the serving directory, the alert receiver."""

    def __init__(
        self, server: AirflowServer, root: Path, webhook: WebhookReceiver, docker_url: str, rest_port: int
    ) -> None:
        self.server = server
        self.rest_port = rest_port
        self.root = root
        self.storage = LocalStorage(f"file://{root}")
        self.serving = root / "serving" / "mnist"
        self.webhook = webhook
        self.docker_url = docker_url
        self.faults: dict[str, Any] = {}

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.serving / "releases.jsonl").read_text().splitlines()]

    def releases(self) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if "event" not in line]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == kind]

    def served(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}/v1/models/mnist", timeout=10) as answer:
            return json.loads(answer.read())

    def run_for(self, day: dt.date, run_type: str) -> dict[str, Any]:
        runs = [
            run for run in self.server.dag_runs(DAG_ID)
            if run["run_type"] == run_type and (run.get("data_interval_start") or "")[:10] == day.isoformat()
        ]  # fmt: skip
        assert len(runs) == 1, f"expected one {run_type} run for {day}, got {[r['dag_run_id'] for r in runs]}"
        return runs[0]

    def wait_run(self, day: dt.date, run_type: str, timeout_s: float) -> dict[str, Any]:
        """The run of `day`, once the scheduler created it (the next one waits for max_active_runs)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                return self.run_for(day, run_type)
            except AssertionError:
                time.sleep(2)
        return self.run_for(day, run_type)

    def ti(self, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any] | None:
        for ti in self.server.task_instances(DAG_ID, run_id):
            if ti["task_id"] == task_id and ti["map_index"] == map_index:
                return ti
        return None

    def clear(self, run_id: str, task_id: str, map_index: int | None = None) -> dict[str, Any]:
        """What the UI's Clear on one task does: reset it (and its run) so the scheduler runs it again."""
        task = [task_id, map_index] if map_index is not None else task_id
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [task], "only_failed": False,
                "reset_dag_runs": True, "include_downstream": False, "include_upstream": False}  # fmt: skip
        # Clearing is idempotent, and on-call would click again: the story's SQLite can stay locked past
        # its 5 s busy timeout by the tasks' own writes (CI saw HTTP 500 on the api-server's audit insert).
        path = f"/api/v2/dags/{DAG_ID}/clearTaskInstances"
        for _ in range(3):
            status, answer = self.server.request("POST", path, body, expect_error=True)
            if status < 500:
                break
            time.sleep(3)
        if status >= 400:
            raise AssertionError(f"POST {path} -> HTTP {status}: {answer}")
        return answer


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, docker_base_url: str) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("operations")
    storage = LocalStorage(f"file://{root}")
    for day in BACKFILL_DAYS + SCHEDULED_DAYS:
        write_day(storage, day, rows=ROWS, shards=2, bad_fraction=0.02)
    webhook = WebhookReceiver().start()
    rest_port = _free_port()
    env = {
        "DOCKER_HOST": docker_base_url,
        "TFSHIP_STORAGE_ROOT": storage.root_uri,
        "TFSHIP_SERVING_DIR": f"{HOST}={root}/serving/mnist",
        "TFSHIP_SERVING_ADDRESSES": f"{HOST}=127.0.0.1:{rest_port}:{_free_port()}",
        "TFSHIP_LOCAL_WORK_DIR": f"{root}/work",
        "TFSHIP_SCHEDULE_START": SCHEDULED_DAYS[0].isoformat(),
        "TFSHIP_CATCHUP": "true",
        "TFSHIP_RAW_POKE_INTERVAL_S": "5",
        "TFSHIP_PARAM_DEFAULTS": json.dumps(SITE_PARAMS),
        "AIRFLOW_CONN_TFSHIP_ALERT_WEBHOOK": webhook.connection_json(),
    }
    server = AirflowServer(root / "airflow", port=_free_port(), env=env)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        server.start()
        server.unpause(DAG_ID)  # only now: every component answers
        yield Site(server, root, webhook, docker_base_url, rest_port)
    finally:
        server.stop()
        with contextlib.suppress(Exception):  # its container, whatever state the story left it in
            import docker

            docker.DockerClient(base_url=docker_base_url).containers.get(CONTAINER).remove(force=True)
        webhook.stop()
        if server.log_path.exists():
            shutil.copy(server.log_path, ARTIFACTS / "standalone.log")


def _kill_publication_halfway(site: Site, run_id: str, stop: threading.Event) -> None:
    """Wait for publish_model's staging directory to hold half the model, then SIGKILL its task process."""
    while not stop.is_set():
        staging = [p for p in site.serving.glob(".staging-*") if p.is_dir()] if site.serving.exists() else []
        if staging:
            digest = staging[0].name.removeprefix(".staging-")
            candidates = list((site.root / "models" / "mnist" / "candidates").glob(f"*-{digest[:8]}"))
            manifest = json.loads((candidates[0] / "MANIFEST.json").read_text()) if candidates else {"files": []}
            total = sum(entry["size"] for entry in manifest["files"])
            written = sum(f.stat().st_size for f in staging[0].rglob("*") if f.is_file())
            if total and written >= total // 2:
                ti = site.ti(run_id, "publish_model", 0)
                title = f"airflow worker -- {ti['id']}".encode()
                for proc in Path("/proc").iterdir():
                    if proc.name.isdigit():
                        try:
                            cmdline = (proc / "cmdline").read_bytes()
                        except OSError:
                            continue
                        if cmdline.startswith(title):
                            os.kill(int(proc.name), signal.SIGKILL)
                            site.faults["publish_killed"] = {"written": written, "total": total, "pid": int(proc.name)}
                            return
        time.sleep(0.05)


def _stop_serving_mid_release(site: Site, version: int, stop: threading.Event) -> None:
    """The moment the new version is told to load beside the stable one, stop the serving container."""
    import docker

    client = docker.DockerClient(base_url=site.docker_url)
    state = site.serving / "serving.json"
    while not stop.is_set():
        try:
            loading = version in json.loads(state.read_text())["versions"]
        except (OSError, ValueError, KeyError):
            loading = False
        if loading:
            client.containers.get(CONTAINER).stop(timeout=0)
            site.faults["serving_stopped_mid_release"] = version
            return
        time.sleep(0.05)


def _wait_state(site: Site, run_id: str, task_id: str, states: tuple[str, ...], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ti = site.ti(run_id, task_id, 0)
        if ti and ti["state"] in states:
            return ti
        time.sleep(1)
    raise AssertionError(f"{task_id} of {run_id} not in {states} after {timeout_s}s: {ti}\n{site.server.log_tail()}")


@pytest.fixture
def scheduled_days(site: Site) -> list[dict[str, Any]]:
    """Both scheduled days finished (after the fault story, or on their own when a test runs alone)."""
    finished = site.server.wait_for_runs(DAG_ID, 2, timeout_s=1500, where=lambda r: r["run_type"] == "scheduled")
    states = [(run["dag_run_id"], run["state"]) for run in finished]
    assert [state for _, state in states] == ["success", "success"], (
        f"precondition: the two scheduled days must have succeeded, got {states}\n{site.server.log_tail()}"
    )
    assert (site.serving / "releases.jsonl").exists(), "precondition: the scheduled days published nothing"
    return finished


@pytest.fixture
def backfilled_days(site: Site, scheduled_days: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The backfill runs finished; made through the REST API when the UI test did not run first."""
    if not [run for run in site.server.dag_runs(DAG_ID) if run["run_type"] == "backfill"]:
        site.server.set_paused(DAG_ID, True)  # the same SQLite precaution as the UI test
        body = {"dag_id": DAG_ID, "from_date": f"{BACKFILL_DAYS[0].isoformat()}T00:00:00Z",
                "to_date": f"{BACKFILL_DAYS[-1].isoformat()}T00:00:00Z", "max_active_runs": 1,
                "run_backwards": False, "dag_run_conf": {}, "reprocess_behavior": "none"}  # fmt: skip
        status, answer = site.server.request("POST", "/api/v2/backfills", body)
        assert status == 200, f"precondition: creating the backfill failed: {status} {answer}"
        site.server.set_paused(DAG_ID, False)
    finished = site.server.wait_for_runs(
        DAG_ID, len(BACKFILL_DAYS), timeout_s=1500, where=lambda r: r["run_type"] == "backfill"
    )
    assert {run["state"] for run in finished} == {"success"}, [(r["dag_run_id"], r["state"]) for r in finished]
    return finished


def test_two_scheduled_days_with_faults_cleared_end_like_an_uninterrupted_run(site: Site):
    started = time.monotonic()
    # The scheduler creates both runs itself (catchup from the schedule start).
    first = site.wait_run(SCHEDULED_DAYS[0], "scheduled", timeout_s=120)

    # Day 1: the publication is killed halfway, then cleared through the REST API.
    stop = threading.Event()
    killer = threading.Thread(target=_kill_publication_halfway, args=(site, first["dag_run_id"], stop), daemon=True)
    killer.start()
    killed = _wait_state(site, first["dag_run_id"], "publish_model", ("up_for_retry", "failed", "success"), 600)
    stop.set()
    assert "publish_killed" in site.faults, f"publication finished before it could be killed: {killed}"
    assert killed["state"] in ("up_for_retry", "failed"), killed
    assert list(site.serving.glob(".staging-*")), "the killed publication left no staging directory behind"
    site.clear(first["dag_run_id"], "publish_model", 0)

    # Day 2: the serving container is stopped while the new version loads; on-call clears the host's release,
    # whose rerun recreates the container and releases the version.
    second = site.wait_run(SCHEDULED_DAYS[1], "scheduled", timeout_s=600)
    stop = threading.Event()
    new = _version(SCHEDULED_DAYS[1])
    stopper = threading.Thread(target=_stop_serving_mid_release, args=(site, new, stop), daemon=True)
    stopper.start()
    failed = _wait_state(site, second["dag_run_id"], "release_host", ("failed", "success"), 900)
    stop.set()
    assert failed["state"] == "failed", f"the release passed before the container could be stopped: {site.faults}"
    site.clear(second["dag_run_id"], "release_host", 0)
    finished = site.server.wait_for_runs(DAG_ID, 2, timeout_s=600, where=lambda r: r["run_type"] == "scheduled")
    assert [r["state"] for r in finished] == ["success", "success"], site.server.log_tail()
    (ARTIFACTS / "timings.txt").open("a").write(f"two scheduled days with faults: {time.monotonic() - started:.0f}s\n")

    # Each run processed its own partition.
    for day in SCHEDULED_DAYS:
        stats = json.loads((site.root / "features" / "mnist" / f"dt={day.isoformat()}" / "_stats.json").read_text())
        assert stats["rows_read"] == ROWS
    # The same end state as without faults: one version per day, one release line each, no staging left.
    assert [(r["version"], r["day"]) for r in site.releases()] == [(_version(d), d.isoformat()) for d in SCHEDULED_DAYS]
    versions = sorted(int(p.name) for p in site.serving.iterdir() if p.name.isdigit())
    assert versions == [_version(d) for d in SCHEDULED_DAYS]
    assert not list(site.serving.glob(".staging-*")) and not (site.serving / ".rejected").exists()
    canaries = site.events("canary")
    assert [(c["version"], c["passed"]) for c in canaries] == [(_version(d), True) for d in SCHEDULED_DAYS]
    # Serving ends on the newer day's model.
    assert _available_versions(site.served()) == [_version(SCHEDULED_DAYS[1])]
    # The release's failure reached the webhook with the task's log URL, naming the stopped container.
    alerts = [a for a in site.webhook.wait_for(1, timeout_s=30) if "release_host" in json.dumps(a)]
    assert alerts, site.webhook.received
    text = json.dumps(alerts[0])
    assert f"{site.server.base_url}/dags/{DAG_ID}/runs/" in text and "/tasks/release_host" in text
    assert "exited" in text and f"D={SCHEDULED_DAYS[1].isoformat()}" in text


def _available_versions(status: dict[str, Any]) -> list[int]:
    return sorted(int(v["version"]) for v in status["model_version_status"] if v["state"] == "AVAILABLE")


def test_backfill_from_the_ui_stores_candidates_and_leaves_serving_on_the_newest(site: Site, scheduled_days):
    from tests.browser.driver import ensure_browser_deps, run_ui

    ensure_browser_deps()
    started = time.monotonic()
    releases_before = site.releases()
    # Paused while the backfill is created: on SQLite a creation that hits "database is locked" is
    # rolled back after the scheduler may have loaded its first runs, and Airflow 3.3.2's scheduler
    # then dies on the deleted row (ObjectDeletedError). A paused DAG's runs are not loaded.
    site.server.set_paused(DAG_ID, True)
    created = run_ui(
        "backfill", "--base-url", site.server.base_url, "--dag-id", DAG_ID,
        "--from", BACKFILL_DAYS[0].isoformat(), "--to", BACKFILL_DAYS[-1].isoformat(),
        "--shots", str(ARTIFACTS), "--max-active-runs", "1", "--no-unpause",
    )  # fmt: skip
    assert created.get("backfill_id") is not None, created
    site.server.set_paused(DAG_ID, False)
    assert (ARTIFACTS / "backfill-form.png").stat().st_size > 0
    finished = site.server.wait_for_runs(
        DAG_ID, len(BACKFILL_DAYS), timeout_s=900, where=lambda r: r["run_type"] == "backfill"
    )
    every_run = str(len(SCHEDULED_DAYS + BACKFILL_DAYS))
    runs = run_ui("runs", "--base-url", site.server.base_url, "--dag-id", DAG_ID, "--shots", str(ARTIFACTS),
                  "--name", "backfill-runs-finished", "--min-runs", every_run)  # fmt: skip
    assert (ARTIFACTS / "backfill-runs-finished.png").stat().st_size > 0
    with (ARTIFACTS / "timings.txt").open("a") as timings:
        timings.write(f"UI backfill of {len(BACKFILL_DAYS)} days: {time.monotonic() - started:.0f}s\n")

    assert sorted(r["data_interval_start"][:10] for r in finished) == [d.isoformat() for d in BACKFILL_DAYS]
    assert {r["state"] for r in finished} == {"success"}, [(r["dag_run_id"], r["state"]) for r in finished]
    backfill_rows = [row for row in runs["runs"] if "backfill" in str(row.get("run_type")).lower()]
    shown = [str(row.get("state", "")).lower() for row in backfill_rows]
    assert shown == ["success"] * len(BACKFILL_DAYS), runs["runs"]
    candidates = sorted(p.name for p in (site.root / "models" / "mnist" / "candidates").iterdir())
    for day in BACKFILL_DAYS:
        stats = json.loads((site.root / "features" / "mnist" / f"dt={day.isoformat()}" / "_stats.json").read_text())
        assert stats["rows_read"] == ROWS
        assert any(name.startswith(f"{day.isoformat()}-") for name in candidates), candidates
        run = site.run_for(day, "backfill")
        assert site.ti(run["dag_run_id"], "publish_model", 0)["state"] == "skipped"
    # Nothing older went out: the release log is unchanged and the newest day still serves.
    assert site.releases() == releases_before
    assert _available_versions(site.served()) == [_version(SCHEDULED_DAYS[1])]
    assert sorted(int(p.name) for p in site.serving.iterdir() if p.name.isdigit()) == [
        _version(d) for d in SCHEDULED_DAYS
    ]


def test_manual_params_are_refused_before_any_work(site: Site, scheduled_days):
    trigger = f"/api/v2/dags/{DAG_ID}/dagRuns"
    for conf, named in (
        ({"force_publish": "yes"}, "force_publish"),
        ({"raw_root": "../../etc"}, "raw_root"),
        ({"day": "2026-02-30"}, "day"),
        ({"replicas": 0}, "replicas"),
    ):
        status, answer = site.server.request("POST", trigger, {"logical_date": None, "conf": conf}, expect_error=True)
        assert status == 400, (conf, status, answer)
        assert named in json.dumps(answer), (conf, answer)
    # A well-formed day with no data is refused by the first task; nothing downstream starts.
    status, run = site.server.request("POST", trigger, {"logical_date": None, "conf": {"day": "2020-01-01"}})
    assert status == 200, run
    [failed] = site.server.wait_for_runs(DAG_ID, 1, timeout_s=300, where=lambda r: r["dag_run_id"] == run["dag_run_id"])
    assert failed["state"] == "failed"
    states = {ti["task_id"]: ti["state"] for ti in site.server.task_instances(DAG_ID, run["dag_run_id"])}
    assert states["resolve_day"] == "failed"
    assert states["wait_for_raw"] in ("upstream_failed", None) and states["preprocess"] in ("upstream_failed", None)
    log = site.server.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.request.quote(run['dag_run_id'], safe='')}"
        "/taskInstances/resolve_day/logs/1"
    )
    assert "day 2020-01-01 has no raw data" in json.dumps(log)


def test_release_view_shows_the_served_version_and_is_linked_from_the_run(site: Site, backfilled_days):
    from tests.browser.driver import run_ui

    newest = site.run_for(SCHEDULED_DAYS[1], "scheduled")
    quoted = urllib.request.quote(newest["dag_run_id"], safe="")
    links = site.server.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/report_release/links")
    link = links["extra_links"]["Release view"]
    assert link.startswith(f"{site.server.base_url}/tfship/releases?model=mnist&run_id="), links
    served = str(_version(SCHEDULED_DAYS[1]))
    page = run_ui(
        "page", "--base-url", site.server.base_url, "--path", link.removeprefix(site.server.base_url),
        "--shots", str(ARTIFACTS), "--name", "release-view",
        "--expect-text", "Releases of model mnist", "--expect-text", served,
        "--expect-text", SCHEDULED_DAYS[1].isoformat(), "--expect-text", "cv_results.png",
    )  # fmt: skip
    assert not page.get("missing"), page
    # The page's numbers come from the run's record on the storage root and from TF Serving itself.
    with urllib.request.urlopen(f"{site.server.base_url}/tfship/releases.json?model=mnist", timeout=30) as answer:
        records = json.loads(answer.read())["records"]
    by_run = {record["run_id"]: record for record in records}
    record = by_run[newest["dag_run_id"]]
    assert (record["status"], record["version"], record["day"]) == (
        "released",
        int(served),
        SCHEDULED_DAYS[1].isoformat(),
    )
    [host] = record["hosts"]
    assert host["canary"]["passed"] is True and host["canary"]["latency_ms"]["p99"] > 0
    for day in BACKFILL_DAYS:
        [held] = [r for r in records if r["day"] == day.isoformat()]
        assert held["status"] == "held" and "older than the served version" in held["gate"]["reason"]
