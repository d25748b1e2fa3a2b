"""Narrow operators that keep TF Serving deployed (docker provider) and canary a new version over REST.

The logic is in `tfship.serving` and `tfship.canary`; these adapters build the DockerHook,
read templated arguments, log, push XCom, alert and turn failures into failed tasks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from tfship.config import ALERT_WEBHOOK_CONN_ID
from tfship.errors import ConfigError
from tfship_airflow.alerts import mark_alerted
from tfship_airflow.release_view import ReleaseViewLink

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"


def _whole(task_id: str, name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{task_id}: {name}={value!r} is not a whole number") from None


def _number(task_id: str, name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{task_id}: {name}={value!r} is not a number") from None


def rest_base_url(host: str, rest_port: int, rest_host: str | None = None) -> str:
    """`http://<host>:<port>`; the 'local' serving host is loopback."""
    address = rest_host or ("127.0.0.1" if host in ("local", "localhost") else host)
    return f"http://{address}:{int(rest_port)}"


def build_standin_image(docker_url: str) -> str:
    """Build (or find) the stand-in image with scripts/serving-image; only used where the real image is absent."""
    import subprocess

    from tfship.config import PROJECT_ROOT

    # A subprocess: serving_standin lives at the project root, which is not on a worker's sys.path.
    done = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "serving-image")], capture_output=True, text=True,
        env={**os.environ, "DOCKER_HOST": docker_url},
    )  # fmt: skip
    if done.returncode != 0:
        raise ConfigError(f"scripts/serving-image failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def send_serving_alert(
    *, title: str, model: str, host: str, version: int | str, check: str, detail: str, context: Mapping[str, Any],
    conn_id: str = ALERT_WEBHOOK_CONN_ID, log: Any = None,
) -> None:  # fmt: skip
    """Alert through the webhook connection; a broken webhook is logged, never raised over the failure."""
    from tfship.alerts import build_alert
    from tfship.days import day_of_version
    from tfship_airflow.alerts import send_alert

    ti = context.get("ti")
    task = f"{ti.dag_id}.{ti.task_id} try {ti.try_number}" if ti is not None else None
    version_day = day_of_version(version)
    day = version_day.isoformat() if version_day else None
    payload = build_alert(
        title=title, model=model, day=day, host=host, endpoint=None, file=f"version {version}", check=check,
        detail=detail, log_url=getattr(ti, "log_url", None), task=task,
    )  # fmt: skip
    try:
        send_alert(payload, http_conn_id=conn_id)
    except Exception:  # the task fails anyway; losing the alert must not hide why
        if log is not None:
            log.exception("could not send the serving alert through connection %s", conn_id)


SUPERSEDED_KEY = "superseded"  # XCom a skipped copy leaves for the release record


def skip_if_superseded(serving_dir: str, version: int, task_id: str, context: Any = None) -> None:
    """Skip when a higher version already sits in the served directory (a backfill overtaken by a newer run).

    TF Serving's `latest` policy will never load the lower number, so waiting for it or sending it
    a canary would only fail, and a failed canary would reject the good newer version's backup.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from tfship.gate import superseded_by

    newer = superseded_by(Path(serving_dir), version)
    if newer is not None:
        reason = f"version {version} is superseded by version {newer} in {serving_dir}; serving untouched"
        if context is not None:
            context["ti"].xcom_push(key=SUPERSEDED_KEY, value=reason)
        raise AirflowSkipException(f"{task_id}: {reason}")


def roll_back(
    *, serving_dir: str, model: str, versions: Sequence[int], base_url: str, timeout_s: float, log: Any
) -> dict[str, Any]:
    """Move versions to `.rejected/`, wait for the previous one to serve and answer its canary; return the result."""
    from tfship.canary import reject_versions
    from tfship.serving import ServingClient

    client = ServingClient(base_url, model)
    result = reject_versions(Path(serving_dir), list(versions), client, timeout_s=timeout_s)
    log.warning("rolled back %s: rejected %s, version %d serves again", serving_dir, list(versions), result.serving)
    return result.to_dict()


class DeployServingOperator(BaseOperator):
    """Keep one TF Serving container per host and model, then wait until the published version is AVAILABLE.

    Same spec (label `tfship.spec-hash`) and running: the container is left alone and hot reload
    brings the version. Otherwise what carries our name or labels is stopped (short timeout: the
    server ignores SIGTERM) and removed, a new container is created, and the downtime is reported.
    A version that fails to load (END with an error) is moved to `.rejected/`, the previous one
    is waited for, an alert is sent and the task fails. XCom: what was done, as a dict.
    """

    template_fields: Sequence[str] = (
        "model", "host", "serving_dir", "version", "image", "docker_url", "rest_host", "rest_port", "grpc_port",
        "poll_wait_s", "model_config_file", "memory_limit", "available_timeout_s",
    )  # fmt: skip
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        model: str,
        host: str,
        serving_dir: str,
        version: int | str,
        image: str | None = None,
        docker_url: str | None = None,
        rest_host: str | None = None,
        rest_port: int | str = 8501,
        grpc_port: int | str = 8500,
        poll_wait_s: int | str = 1,
        model_config_file: str | None = None,
        extra_flags: Sequence[str] = (),
        restart_policy: str = "unless-stopped",
        memory_limit: str | None = "2g",
        stop_timeout_s: int = 2,
        available_timeout_s: float | str = 600,
        alert_conn_id: str = ALERT_WEBHOOK_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.host = host
        self.serving_dir = serving_dir
        self.version = version
        self.image = image
        self.docker_url = docker_url
        self.rest_host = rest_host
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.poll_wait_s = poll_wait_s
        self.model_config_file = model_config_file
        self.extra_flags = tuple(extra_flags)
        self.restart_policy = restart_policy
        self.memory_limit = memory_limit
        self.stop_timeout_s = stop_timeout_s
        self.available_timeout_s = available_timeout_s
        self.alert_conn_id = alert_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.providers.docker.hooks.docker import DockerHook

        from tfship.serving import (
            ServingClient,
            ServingSpec,
            VersionLoadFailed,
            choose_image,
            container_alive_check,
            reconcile_container,
        )

        version = _whole(self.task_id, "version", self.version)
        skip_if_superseded(self.serving_dir, version, self.task_id, context)
        docker_url = self.docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL
        # docker_conn_id is a registry login, not the daemon: none is needed for local images.
        api = DockerHook(docker_conn_id=None, base_url=docker_url, version="auto").get_conn()
        image = choose_image(api, self.image or None, build_standin=lambda: build_standin_image(docker_url))
        spec = ServingSpec(
            model=self.model,
            serving_dir=str(Path(self.serving_dir).resolve()),
            image=image,
            grpc_port=_whole(self.task_id, "grpc_port", self.grpc_port),
            rest_port=_whole(self.task_id, "rest_port", self.rest_port),
            poll_wait_s=_whole(self.task_id, "poll_wait_s", self.poll_wait_s),
            model_config_file=self.model_config_file or None,
            extra_flags=self.extra_flags,
            restart_policy=self.restart_policy,
            memory_limit=self.memory_limit or None,
        )
        self.log.info("serving spec %s on %s: image %s, hash %s", spec.container_name, self.host, image,
                      spec.spec_hash()[:12])  # fmt: skip
        action = reconcile_container(api, spec, stop_timeout_s=self.stop_timeout_s)
        base_url = rest_base_url(self.host, spec.rest_port, self.rest_host)
        client = ServingClient(base_url, self.model)
        timeout_s = _number(self.task_id, "available_timeout_s", self.available_timeout_s)
        result: dict[str, Any] = {"version": version, "image": image, "url": base_url, **action.to_dict()}
        if action.action == "kept":
            self.log.info("container %s kept (same spec, running): hot reload brings version %d", spec.container_name,
                          version)  # fmt: skip
        else:
            alive = container_alive_check(api, action.container_id)
            answered_at = client.wait_until_answering(timeout_s=timeout_s, check_alive=alive)
            if action.stopped_at is not None:
                result["downtime_s"] = round(answered_at - action.stopped_at, 2)
                self.log.warning("container %s %s (%s): serving was down for %.1f s", spec.container_name,
                                 action.action, action.reason, result["downtime_s"])  # fmt: skip
            else:
                self.log.warning("container %s %s (%s)", spec.container_name, action.action, action.reason)
        started = time.monotonic()
        try:
            client.wait_until_available(version, timeout_s=timeout_s)
        except VersionLoadFailed as err:
            self._fail_version(context, err, base_url, timeout_s)
        result["available_after_s"] = round(time.monotonic() - started, 2)
        self.log.info("model %s version %d is AVAILABLE at %s", self.model, version, base_url)
        return result

    def _fail_version(self, context: Any, error: Exception, base_url: str, timeout_s: float) -> None:
        version = _whole(self.task_id, "version", self.version)
        detail = str(error)
        try:
            rollback = roll_back(serving_dir=self.serving_dir, model=self.model, versions=[version], base_url=base_url,
                                 timeout_s=timeout_s, log=self.log)  # fmt: skip
            detail += f"\nrolled back: version {rollback['serving']} serves again"
        except Exception as rollback_error:  # noqa: BLE001 - reported in the alert and the failure
            detail += f"\nROLLBACK FAILED: {rollback_error}"
        send_serving_alert(
            title="tfship: model version failed to load", model=self.model, host=self.host, version=version,
            check="load", detail=detail, context=context, conn_id=self.alert_conn_id, log=self.log,
        )  # fmt: skip
        raise mark_alerted(AirflowFailException(detail)) from error


class CanaryServingOperator(BaseOperator):
    """Send the version's `canary.json` to `/versions/<v>:predict` under concurrency; on failure roll back and fail.

    The verdict is appended to `releases.jsonl` (`"event": "canary"`), logged as a readable block
    and returned as XCom. A failed canary moves the version to `.rejected/`, waits until the
    previous version is AVAILABLE and answers its own canary set, alerts, and fails the task.
    """

    template_fields: Sequence[str] = (
        "model", "host", "serving_dir", "version", "rest_host", "rest_port", "batch_size", "concurrency",
        "accuracy_floor", "min_argmax_agreement", "max_abs_diff", "latency_budget_ms", "rollback_timeout_s",
    )  # fmt: skip
    ui_color = "#fcf3cf"
    operator_extra_links = (ReleaseViewLink(),)

    def __init__(
        self,
        *,
        model: str,
        host: str,
        serving_dir: str,
        version: int | str,
        rest_host: str | None = None,
        rest_port: int | str = 8501,
        batch_size: int | str = 32,
        concurrency: int | str = 4,
        accuracy_floor: float | str = 0.9,
        min_argmax_agreement: float | str = 0.99,
        max_abs_diff: float | str = 1e-3,
        latency_budget_ms: float | str = 1000,
        rollback_timeout_s: float | str = 600,
        alert_conn_id: str = ALERT_WEBHOOK_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.host = host
        self.serving_dir = serving_dir
        self.version = version
        self.rest_host = rest_host
        self.rest_port = rest_port
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.accuracy_floor = accuracy_floor
        self.min_argmax_agreement = min_argmax_agreement
        self.max_abs_diff = max_abs_diff
        self.latency_budget_ms = latency_budget_ms
        self.rollback_timeout_s = rollback_timeout_s
        self.alert_conn_id = alert_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from tfship.canary import CANARY_FILE, CanaryPolicy, append_release_event, load_canary, run_canary

        version = _whole(self.task_id, "version", self.version)
        policy = CanaryPolicy(
            batch_size=_whole(self.task_id, "batch_size", self.batch_size),
            concurrency=_whole(self.task_id, "concurrency", self.concurrency),
            accuracy_floor=_number(self.task_id, "accuracy_floor", self.accuracy_floor),
            min_argmax_agreement=_number(self.task_id, "min_argmax_agreement", self.min_argmax_agreement),
            max_abs_diff=_number(self.task_id, "max_abs_diff", self.max_abs_diff),
            latency_budget_ms=_number(self.task_id, "latency_budget_ms", self.latency_budget_ms),
        )
        skip_if_superseded(self.serving_dir, version, self.task_id, context)
        target = Path(self.serving_dir)
        base_url = rest_base_url(self.host, _whole(self.task_id, "rest_port", self.rest_port), self.rest_host)
        self._check_reachable(base_url, version, "before the canary")
        verdict = run_canary(base_url, self.model, version, load_canary(target / str(version) / CANARY_FILE), policy)
        record = {"host": self.host, "run_id": context.get("run_id"), **verdict.to_dict()}
        block = verdict.render()
        if verdict.passed:
            self.log.info("\n%s", block)
            append_release_event(target, "canary", record)
            return record
        self.log.error("\n%s", block)
        if "http" in verdict.failed_checks:
            self._check_reachable(base_url, version, "during the canary")
        detail = block
        try:
            wait_s = _number(self.task_id, "rollback_timeout_s", self.rollback_timeout_s)
            record["rollback"] = roll_back(serving_dir=self.serving_dir, model=self.model, versions=[version],
                                           base_url=base_url, timeout_s=wait_s, log=self.log)  # fmt: skip
            detail += f"\nrolled back: version {record['rollback']['serving']} serves again"
        except Exception as err:  # noqa: BLE001 - recorded, alerted and raised below
            record["rollback_error"] = str(err)
            detail += f"\nROLLBACK FAILED: {err}"
        append_release_event(target, "canary", record)
        send_serving_alert(
            title="tfship: canary failed, version rolled back", model=self.model, host=self.host, version=version,
            check=",".join(verdict.failed_checks), detail=detail, context=context, conn_id=self.alert_conn_id,
            log=self.log,
        )  # fmt: skip
        raise mark_alerted(
            AirflowFailException(f"canary of model {self.model} version {version} on {self.host} failed:\n{detail}")
        )

    def _check_reachable(self, base_url: str, version: int, when: str) -> None:
        """Fail without touching the served directory when nothing answers: rolling back would judge the model."""
        from tfship.serving import ServingClient, ServingUnreachable

        client = ServingClient(base_url, self.model)
        try:
            reason = client.unreachable()
        finally:
            client.session.close()
        if reason is not None:
            raise ServingUnreachable(
                f"serving on {self.host} unreachable {when}: {reason}. Version {version} stays in place and "
                "nothing was rolled back; clear this task once the server answers"
            )


def rollback_on_demand(params: Mapping[str, Any], context: Mapping[str, Any], *, log: Any) -> dict[str, Any]:
    """The manual rollback: reject the newest version ('previous') or every version above a target."""
    from tfship.canary import append_release_event, versions_to_reject
    from tfship.config import Settings

    settings = Settings.from_env()
    host, model = params["host"], params["model"]
    if model != settings.model:
        raise AirflowFailException(f"model {model!r} is not the configured model {settings.model!r} (TFSHIP_MODEL)")
    serving_dirs = settings.serving_dirs
    if host not in serving_dirs:
        raise AirflowFailException(f"host {host!r} is not a serving host (known: {sorted(serving_dirs)})")
    serving_dir = serving_dirs[host]
    versions = versions_to_reject(Path(serving_dir), params["target"])
    base_url = rest_base_url(host, int(params["rest_port"]))
    result = roll_back(serving_dir=serving_dir, model=model, versions=versions, base_url=base_url,
                       timeout_s=float(params["timeout_s"]), log=log)  # fmt: skip
    append_release_event(Path(serving_dir), "rollback", {"host": host, "model": model, "run_id": context.get("run_id"),
                                                         "requested": str(params["target"]), **result})  # fmt: skip
    return result
