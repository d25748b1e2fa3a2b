"""The narrow operator that publishes a candidate model into one serving host's serving dir."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from tfship.config import ALERT_WEBHOOK_CONN_ID, StorageConfig
from tfship.errors import ConfigError
from tfship_airflow.alerts import alert, alert_for_failure, fail_after_alert

SUPERSEDED_KEY = "superseded"  # XCom a copy that skipped because a later version sat there leaves for the record


def serving_host_queue(host: str) -> str:
    """The Celery queue whose only worker runs on `host` (see PublishModelOperator)."""
    return f"publish-{host}"


class PublishModelOperator(BaseOperator):
    """Publish a candidate model into one serving host's serving dir; XCom: a `PublishResult` dict.

    The work is `tfship.release.publish.publish_candidate`: md5 gate against the host's release
    log, rate-limited streaming from a random WebHDFS/HttpFS endpoint with failover, md5 and size
    checks, fsync, `rename()` of `.staging-<digest>` to the version number, one release-log line,
    pruning to the newest `keep` versions. A rerun of a published digest is a no-op returning
    its version. A host already holding a later day's version is left alone: the task skips and
    leaves `{"host", "reason"}` under the XCom key "superseded".

    One copy per serving host, mapped::

        PublishModelOperator.partial(task_id="publish_model", candidate=..., storage=SETTINGS.storage)
            .expand_kwargs([host.to_kwargs() for host in SETTINGS.serving_hosts])

    Each copy writes to its host's local disk, so it must run on that host. Airflow (checked on
    3.3.2) takes `queue` and `pool` of every mapped copy from `.partial()`, so expanding `queue`
    routes nothing: run one Celery worker per serving host on `serving_host_queue(host)` and set
    each copy's queue in a `task_instance_mutation_hook`; `require_host_match=True` makes a copy
    that lands on the wrong machine fail before writing.

    Failures: per-file retries, resumption at the byte reached and endpoint failover happen
    inside; Airflow's `retries` with `retry_exponential_backoff` cover the rest. After the last
    try, or at once for a failure no retry can fix (bad manifest, md5 or size mismatch at the
    source, a host without room, read-only, unwritable, a file in place of the serving dir, a
    version directory changed by hand, a bad argument), an alert
    goes to the webhook connection and the failure is marked, so the DAG's failure callback
    stays silent for it.

    :param candidate: the candidate directory, relative to the storage root
        (`models/<model>/candidates/<D>-<digest8>`). Templated.
    :param host: the serving host's name, used in logs, alerts and the release log. Templated.
    :param serving_dir: the model's TF Serving base path on that host (absolute). Templated.
    :param storage: where candidates are read from: the storage root and its WebHDFS/HttpFS endpoints.
    :param day: D of the run, `YYYY-MM-DD`; the manifest must say the same day. Templated.
    :param keep: how many versions to keep in the serving dir (older ones are pruned). Templated.
    :param rate_limit_bps: read rate limit in bytes per second, 0 for none; it holds over all streams. Templated.
    :param streams: how many files are read at once (models with many variable shards). Templated.
    :param space_margin_bytes: free space the host must keep beyond the model; less refuses the
        publication before its first byte (check "space"). Templated.
    :param file_attempts: reads of one file (over the endpoints) before giving up.
    :param backoff_s: first pause between attempts; doubles each time.
    :param deadline_s: the whole publication's time limit.
    :param connect_timeout_s: WebHDFS connect timeout.
    :param read_timeout_s: WebHDFS read timeout (a stalled endpoint counts as failed after it).
    :param alert_conn_id: the HTTP connection of the alert webhook.
    :param send_alerts: False to leave alerting to the failure callback alone.
    :param require_host_match: fail unless this worker's hostname is `host`.
    """

    template_fields: Sequence[str] = (
        "candidate",
        "serving_dir",
        "day",
        "host",
        "rate_limit_bps",
        "keep",
        "streams",
        "space_margin_bytes",
    )
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        candidate: str,
        host: str,
        serving_dir: str,
        storage: StorageConfig,
        day: str | None = None,
        keep: int = 3,
        rate_limit_bps: int = 0,
        streams: int = 4,
        space_margin_bytes: int = 64 << 20,
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
        self.host = host
        self.serving_dir = serving_dir
        self.storage = storage
        self.day = day
        self.keep = keep
        self.rate_limit_bps = rate_limit_bps
        self.streams = streams
        self.space_margin_bytes = space_margin_bytes
        self.file_attempts = file_attempts
        self.backoff_s = backoff_s
        self.deadline_s = deadline_s
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.alert_conn_id = alert_conn_id
        self.send_alerts = send_alerts
        self.require_host_match = require_host_match

    def _check_host(self) -> None:
        here = {socket.gethostname().lower(), socket.getfqdn().lower()}
        here |= {name.split(".")[0] for name in here}
        if self.host.lower() not in here:
            raise AirflowFailException(
                f"{self.task_id} publishes to host {self.host!r} but runs on {socket.gethostname()!r}: "
                f"route it to queue {serving_host_queue(self.host)!r} (see PublishModelOperator)"
            )

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from tfship.release.publish import PublishError, PublishPolicy, SupersededError, publish_candidate
        from tfship.release.transfer import Source

        ti = context["ti"]
        try:
            if self.require_host_match:
                self._check_host()
            policy = PublishPolicy(
                rate_limit_bps=self.rate_limit_bps,
                streams=self.streams,
                keep=self.keep,
                space_margin_bytes=self.space_margin_bytes,
                file_attempts=self.file_attempts,
                backoff_s=self.backoff_s,
                deadline_s=self.deadline_s,
            )
            source = Source(self.storage, self.connect_timeout_s, self.read_timeout_s)
            result = publish_candidate(
                source,
                self.candidate,
                self.serving_dir,
                host=self.host,
                run_id=context["run_id"],
                day=self.day or None,
                policy=policy,
            )
        except SupersededError as err:
            ti.xcom_push(key=SUPERSEDED_KEY, value={"host": self.host, "reason": str(err)})
            raise AirflowSkipException(str(err)) from err
        except PublishError as err:
            if err.permanent or ti.try_number > ti.max_tries:
                self._alert(context, err)
            if err.permanent:
                raise fail_after_alert(err, str(err)) from err  # retrying cannot fix the candidate
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
        return result.to_dict()

    def _alert(self, context: Any, error: BaseException) -> None:
        if self.send_alerts:
            alert(context, alert_for_failure({**context, "exception": error}), conn_id=self.alert_conn_id, error=error)
