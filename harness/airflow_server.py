"""A real Airflow (`airflow standalone`: api-server, scheduler, dag-processor, triggerer) on a private home.

SQLite and the LocalExecutor, the project's dags/ and plugins/, no login (every user is admin)
so the browser and the REST client need no password. Tests talk to it only through its REST
API and its UI, as on-call would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfship.config import PROJECT_ROOT

TERMINAL_RUN_STATES = ("success", "failed")
HEALTHY_PARTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")


class AirflowServerError(RuntimeError):
    """The server did not start or a REST call failed; the message carries the log tail."""


class AirflowServer:
    """Start, query and stop one `airflow standalone` whose home is `home`."""

    def __init__(self, home: Path, *, port: int, env: Mapping[str, str] | None = None) -> None:
        self.home = home
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = home / "standalone.log"
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Paused until the test unpauses them (`unpause`): a scheduler that starts tasks before the
            # api-server listens fails them with "connection refused" on a loaded machine.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            # Quick turnarounds for a test: look for new runs and finished tasks often.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._token: str | None = None

    def start(self, timeout_s: float = 300.0) -> None:
        """Migrate the metadata DB, start standalone and wait until every component reports healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        migrate = subprocess.run(["airflow", "db", "migrate"], env=self.env, capture_output=True, text=True)
        if migrate.returncode != 0:
            raise AirflowServerError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["airflow", "standalone"], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AirflowServerError(f"airflow standalone exited with {code}:\n{self.log_tail()}")
            try:
                health = self.get("/api/v2/monitor/health")
                states = {name: (part or {}).get("status") for name, part in health.items()}
                if all(states.get(name) == "healthy" for name in HEALTHY_PARTS):
                    return
                last = str(states)
            except (AirflowServerError, OSError) as err:
                last = str(err)
            time.sleep(2)
        raise AirflowServerError(f"Airflow not healthy after {timeout_s:.0f}s (last: {last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop every component (the whole process group) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 80) -> str:
        """The end of the standalone log, for failure messages."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def token(self) -> str:
        """A JWT for the REST API; with all-admins auth `GET /auth/token` hands one out without a password."""
        if self._token is None:
            with urllib.request.urlopen(f"{self.base_url}/auth/token", timeout=30) as answer:
                self._token = json.loads(answer.read())["access_token"]
        return self._token

    def request(self, method: str, path: str, body: Any = None, *, expect_error: bool = False) -> tuple[int, Any]:
        """One REST call: (HTTP status, decoded JSON); a 4xx/5xx raises unless `expect_error`."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if not path.startswith("/auth/"):
            request.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                raw = answer.read()
                return answer.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = raw.decode(errors="replace")
            if expect_error:
                return err.code, decoded
            raise AirflowServerError(f"{method} {path} -> HTTP {err.code}: {decoded}") from None

    def get(self, path: str) -> Any:
        """GET a REST path (health needs no token, the rest do)."""
        if path == "/api/v2/monitor/health":
            with urllib.request.urlopen(f"{self.base_url}{path}", timeout=10) as answer:
                return json.loads(answer.read())
        return self.request("GET", path)[1]

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of the DAG, oldest logical date first."""
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=run_after")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of one run (mapped copies included)."""
        quoted = urllib.request.quote(run_id, safe="")
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=200")["task_instances"]

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause a DAG (what the UI's toggle does)."""
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def unpause(self, dag_id: str, timeout_s: float = 180.0) -> None:
        """Unpause a DAG once the DAG processor has put it in the metadata DB."""
        deadline = time.monotonic() + timeout_s
        while True:
            status, _ = self.request("GET", f"/api/v2/dags/{dag_id}", expect_error=True)
            if status == 200:
                self.set_paused(dag_id, False)
                return
            if time.monotonic() > deadline:
                raise AirflowServerError(f"DAG {dag_id} not parsed after {timeout_s:.0f}s:\n{self.log_tail()}")
            time.sleep(2)

    def unhealthy_parts(self) -> list[str]:
        """The components whose heartbeat the api-server reports as stale."""
        health = self.get("/api/v2/monitor/health")
        return [name for name in HEALTHY_PARTS if (health.get(name) or {}).get("status") != "healthy"]

    def wait_for_runs(
        self, dag_id: str, count: int, *, timeout_s: float, where: Any = None, poll_s: float = 3.0
    ) -> list[dict[str, Any]]:
        """Wait until `count` runs (those `where(run)` accepts) are finished; fail early when a component died."""
        deadline = time.monotonic() + timeout_s
        chosen: list[dict[str, Any]] = []
        sick_polls = 0
        while time.monotonic() < deadline:
            chosen = [run for run in self.dag_runs(dag_id) if where is None or where(run)]
            finished = [run for run in chosen if run["state"] in TERMINAL_RUN_STATES]
            if len(finished) >= count:
                return finished
            # A dead scheduler never finishes anything: say so now instead of at the timeout.
            sick = self.unhealthy_parts()
            sick_polls = sick_polls + 1 if sick else 0
            if sick_polls >= 5:
                raise AirflowServerError(f"{sick} stopped heartbeating while waiting for runs:\n{self.log_tail()}")
            time.sleep(poll_s)
        states = [(run["dag_run_id"], run["state"]) for run in chosen]
        raise AirflowServerError(f"{count} finished runs of {dag_id} not seen in {timeout_s:.0f}s: {states}")
