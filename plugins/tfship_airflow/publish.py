"""The narrow operator that publishes a candidate model to one serving host."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from tfship.config import ALERT_WEBHOOK_CONN_ID
from tfship.errors import ConfigError
from tfship_airflow.alerts import fail_after_alert, mark_alerted


def serving_host_queue(host: str) -> str:
    """The Celery queue whose only worker runs on `host` (see PublishModelOperator)."""
    return f"publish-{host}"


class PublishModelOperator(BaseOperator):
    """Publish a candidate model into one serving host's TF Serving base path; XCom: the version number.

    The work is `tfship.publish.publish_candidate`: md5 gate against the target's release log,
    rate-limited streaming from a random WebHDFS endpoint with failover, md5 and size checks,
    fsync, `rename()` of `.staging-<digest>` to `<version>`, one release-log line, pruning to
    the newest `keep` versions. A rerun of a published digest is a no-op returning its version.

    One copy per serving host, mapped:

        PublishModelOperator.partial(task_id="publish_model", candidate=..., day=...,
                                     map_index_template="{{ task.host }}")
            .expand_kwargs([{"host": "serve-a", "target_dir": "/models/mnist"}, ...])

    Each copy writes to its host's local disk, so it must run on that host. Airflow (checked on
    3.3.2) takes `queue` and `pool` of every mapped copy from `.partial()` (`MappedOperator.queue`
    reads the partial kwargs; per-copy pools are apache/airflow#33657), so expanding `queue` does
    not route anything. Pin the copies this way instead:

    - CeleryExecutor, one worker on each serving host listening on its own queue
      (`airflow celery worker --queues publish-serve-a` on serve-a, see `serving_host_queue`);
    - an `airflow_local_settings.task_instance_mutation_hook` that sets
      `ti.queue = serving_host_queue(hosts[ti.map_index])` for `task_id == "publish_model"`, using
      the same host list the DAG expands over (Airflow calls the hook on each expanded copy);
    - `require_host_match=True`, so a copy that lands on the wrong machine fails before writing.

    With hosts known at parse time and no mutation hook, one unmapped task per host with
    `queue=serving_host_queue(host)` is the plain alternative. A pool of one slot per host
    (`pool="publish-serve-a"`) can additionally serialise publications into the same host.

    Failures: per-file retries and endpoint failover happen inside; Airflow's `retries` with
    `retry_exponential_backoff` cover the rest. After the last try (`ti.try_number > ti.max_tries`)
    or at once for a failure no retry can fix (bad manifest, md5 or size mismatch at the source),
    a Slack-compatible alert goes to the `tfship_alert_webhook` HTTP connection and the exception is
    marked, so `alert_on_failure` as `on_failure_callback` stays silent for it (and speaks when the
    webhook call itself failed). A task process killed from outside runs neither: in Airflow 3.3
    the supervisor records the failure from the exit code without calling back.
    """

    template_fields: Sequence[str] = ("candidate", "target_dir", "day", "host", "rate_limit_bps", "keep")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        candidate: str,
        target_dir: str,
        host: str,
        day: str | None = None,
        rate_limit_bps: int | str = 0,
        keep: int | str = 3,
        source_root: str | None = None,
        webhdfs_endpoints: Sequence[str] | None = None,
        hdfs_user: str | None = None,
        file_attempts: int = 4,
        backoff_s: float = 1.0,
        deadline_s: float = 900.0,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        alert_conn_id: str = ALERT_WEBHOOK_CONN_ID,
        send_alerts: bool = True,
        require_host_match: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retries", 3)
        kwargs.setdefault("retry_delay", dt.timedelta(seconds=30))
        kwargs.setdefault("retry_exponential_backoff", 2.0)
        super().__init__(**kwargs)
        self.candidate = candidate
        self.target_dir = target_dir
        self.host = host
        self.day = day
        self.rate_limit_bps = rate_limit_bps
        self.keep = keep
        self.source_root = source_root
        self.webhdfs_endpoints = tuple(webhdfs_endpoints) if webhdfs_endpoints is not None else None
        self.hdfs_user = hdfs_user
        self.file_attempts = file_attempts
        self.backoff_s = backoff_s
        self.deadline_s = deadline_s
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.alert_conn_id = alert_conn_id
        self.send_alerts = send_alerts
        self.require_host_match = require_host_match

    def _whole(self, name: str) -> int:
        value = getattr(self, name)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.task_id}: {name}={value!r} is not a whole number") from None

    def _source(self) -> Any:
        from tfship.config import Settings
        from tfship.publish import Source

        settings = Settings.from_env()
        return Source(
            self.source_root or settings.storage_root,
            self.webhdfs_endpoints if self.webhdfs_endpoints is not None else settings.webhdfs_endpoints,
            self.hdfs_user or settings.hdfs_user,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
        )

    def _check_host(self) -> None:
        here = {socket.gethostname().lower(), socket.getfqdn().lower()}
        here |= {name.split(".")[0] for name in here}
        if self.host.lower() not in here:
            raise AirflowFailException(
                f"{self.task_id} publishes to host {self.host!r} but runs on {socket.gethostname()!r}: "
                f"route it to queue {serving_host_queue(self.host)!r} (see PublishModelOperator)"
            )

    def execute(self, context: Any) -> int:
        from airflow.sdk.exceptions import AirflowSkipException

        from tfship.publish import PublishError, PublishPolicy, SupersededError, publish_candidate

        ti = context["ti"]
        try:
            if self.require_host_match:
                self._check_host()
            policy = PublishPolicy(
                rate_limit_bps=self._whole("rate_limit_bps"),
                keep=self._whole("keep"),
                file_attempts=self.file_attempts,
                backoff_s=self.backoff_s,
                deadline_s=self.deadline_s,
            )
            result = publish_candidate(
                self._source(), self.candidate, self.target_dir, host=self.host, run_id=context["run_id"],
                day=self.day or None, policy=policy,
            )  # fmt: skip
        except SupersededError as err:
            ti.xcom_push(key="superseded", value=str(err))  # read by the release record
            raise AirflowSkipException(str(err)) from err
        except PublishError as err:
            if err.permanent or ti.try_number > ti.max_tries:
                self._alert(context, err)
            if err.permanent:
                # retrying cannot fix the candidate
                raise fail_after_alert(err, str(err)) from err
            raise
        except ConfigError as err:
            self._alert(context, err)
            raise fail_after_alert(err, str(err)) from err  # a bad argument fails every try alike
        except Exception as err:
            if ti.try_number > ti.max_tries or isinstance(err, AirflowFailException):
                self._alert(context, err)
            raise
        if result.transferred:
            self.log.info("published version %d (%d bytes in %.2fs)", result.version, result.bytes, result.seconds)
        else:
            self.log.info("already published as version %d", result.version)
        return result.version

    def _alert(self, context: Any, error: BaseException) -> None:
        """Send the alert; a broken webhook is logged, never raised over the real failure."""
        from tfship_airflow.alerts import alert_for_failure, send_alert

        if not self.send_alerts:
            return
        try:
            send_alert(alert_for_failure({**context, "exception": error}), http_conn_id=self.alert_conn_id)
            mark_alerted(error)
        except Exception:  # the alert is best effort; the task's own error must surface
            self.log.exception("could not send the failure alert through connection %s", self.alert_conn_id)
