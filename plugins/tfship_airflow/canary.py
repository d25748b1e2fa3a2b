"""The operator that sends a version's canary set over REST and rolls the version back when it fails."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from tfship.config import ALERT_WEBHOOK_CONN_ID, DEFAULT_REST_PORT
from tfship_airflow.alerts import alert, serving_alert
from tfship_airflow.release_view import ReleaseViewLink
from tfship_airflow.serving import roll_back, skip_if_superseded


class CanaryServingOperator(BaseOperator):
    """Send the version's `canary.json` to `/versions/<v>:predict` under concurrency; on failure roll back and fail.

    The verdict is appended to the host's release log (`"event": "canary"`), logged as a readable
    block and returned as a `CanaryResult` dict. A failed canary moves the version to `.rejected/`,
    waits until the previous version is AVAILABLE and answers its own canary set, alerts, and
    fails the task. When nothing answers at all the task fails without rolling back: an
    unreachable server is not evidence against the model.

    :param model: the model name. Templated.
    :param host: the serving host's name (the REST address unless `rest_host`). Templated.
    :param serving_dir: the model's TF Serving base path on that host. Templated.
    :param version: the version to check, `YYYYMMDDnn`. Templated.
    :param rest_host: the address to reach the REST port at, when it is not `host`. Templated.
    :param rest_port: TF Serving's REST port. Templated.
    :param batch_size: rows per predict request. Templated.
    :param concurrency: concurrent clients. Templated.
    :param accuracy_floor: the least accuracy on the canary set's labels. Templated.
    :param min_argmax_agreement: the least share of rows whose argmax matches the model's offline one. Templated.
    :param max_abs_diff: the largest difference from the offline probabilities (training/serving skew). Templated.
    :param latency_budget_ms: the p99 limit of a batch request. Templated.
    :param rollback_timeout_s: how long a rollback waits for the previous version. Templated.
    :param alert_conn_id: the HTTP connection of the alert webhook.
    """

    template_fields: Sequence[str] = (
        "model",
        "host",
        "serving_dir",
        "version",
        "rest_host",
        "rest_port",
        "batch_size",
        "concurrency",
        "accuracy_floor",
        "min_argmax_agreement",
        "max_abs_diff",
        "latency_budget_ms",
        "rollback_timeout_s",
    )
    ui_color = "#fcf3cf"
    operator_extra_links = (ReleaseViewLink(),)

    def __init__(
        self,
        *,
        model: str,
        host: str,
        serving_dir: str,
        version: int,
        rest_host: str | None = None,
        rest_port: int = DEFAULT_REST_PORT,
        batch_size: int = 32,
        concurrency: int = 4,
        accuracy_floor: float = 0.9,
        min_argmax_agreement: float = 0.99,
        max_abs_diff: float = 1e-3,
        latency_budget_ms: float = 1000,
        rollback_timeout_s: float = 600,
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
        from tfship.constants import LogEvent
        from tfship.release.serving_dir import ServingDir
        from tfship.serving.canary import CANARY_FILE, CanaryPolicy, CanaryResult, load_canary, run_canary
        from tfship.serving.client import rest_base_url

        policy = CanaryPolicy(
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            accuracy_floor=self.accuracy_floor,
            min_argmax_agreement=self.min_argmax_agreement,
            max_abs_diff=self.max_abs_diff,
            latency_budget_ms=self.latency_budget_ms,
        )
        skip_if_superseded(self.host, self.serving_dir, self.version, self.task_id, context)
        target = ServingDir(self.serving_dir)
        base_url = rest_base_url(self.host, self.rest_port, self.rest_host)
        self._check_reachable(base_url, "before the canary")
        canary_set = load_canary(target.version_dir(self.version) / CANARY_FILE)
        verdict = run_canary(base_url, self.model, self.version, canary_set, policy)
        result = CanaryResult(self.host, context.get("run_id"), verdict)
        block = verdict.render()
        if verdict.passed:
            self.log.info("\n%s", block)
            target.log.record_event(LogEvent.CANARY, result.to_dict())
            return result.to_dict()
        self.log.error("\n%s", block)
        if "http" in verdict.failed_checks:
            self._check_reachable(base_url, "during the canary")
        detail = block
        try:
            rollback = roll_back(
                serving_dir=self.serving_dir,
                model=self.model,
                versions=[self.version],
                base_url=base_url,
                timeout_s=self.rollback_timeout_s,
                log=self.log,
            )
            result = CanaryResult(self.host, result.run_id, verdict, rollback=rollback)
            detail += f"\nrolled back: version {rollback['serving']} serves again"
        except Exception as err:  # noqa: BLE001 - recorded, alerted and raised below
            result = CanaryResult(self.host, result.run_id, verdict, rollback_error=str(err))
            detail += f"\nROLLBACK FAILED: {err}"
        target.log.record_event(LogEvent.CANARY, result.to_dict())
        failure = AirflowFailException(
            f"canary of model {self.model} version {self.version} on {self.host} failed:\n{detail}"
        )
        payload = serving_alert(
            context,
            title="tfship: canary failed, version rolled back",
            model=self.model,
            host=self.host,
            version=self.version,
            check=",".join(verdict.failed_checks),
            detail=detail,
        )
        alert(context, payload, conn_id=self.alert_conn_id, error=failure)
        raise failure

    def _check_reachable(self, base_url: str, when: str) -> None:
        """Fail without touching the serving dir when nothing answers: rolling back would judge the model."""
        from tfship.serving.client import ServingClient, ServingUnreachable

        client = ServingClient(base_url, self.model)
        try:
            reason = client.unreachable()
        finally:
            client.close()
        if reason is not None:
            raise ServingUnreachable(
                f"serving on {self.host} unreachable {when}: {reason}. Version {self.version} stays in place and "
                "nothing was rolled back; clear this task once the server answers"
            )
