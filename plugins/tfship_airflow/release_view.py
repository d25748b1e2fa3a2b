"""The release view in Airflow: the `tfship` plugin (page + nav entry), the task link to it, the report task.

- `TfshipPlugin` (ui_plugin.py, which no DAG imports) mounts the FastAPI app of release_app.py
  on the api-server at `/tfship` and adds a "Releases" entry to the UI navigation.
- `ReleaseViewLink` is the "Release view" button of a task. Airflow 3 computes operator links in
  the task runner when the task ends (success or failure) and stores each as an XCom
  (`_link_ReleaseViewLink`); the api-server reads that XCom back, so nothing needs registering.
- `ReleaseReportOperator` gathers what the run's tasks returned, writes the release record to
  the storage root and returns it; it runs when upstream tasks failed or were skipped too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperator, BaseOperatorLink

URL_PREFIX = "/tfship"
RELEASES_ROUTE = "/releases"


def _api_base_url() -> str:
    from airflow.sdk.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/")


def release_view_url(model: str, run_id: str | None = None, *, base_url: str | None = None) -> str:
    """`<[api] base_url>/tfship/releases?model=..&run_id=..` (a root-relative path when base_url is unset)."""
    base = _api_base_url() if base_url is None else base_url.rstrip("/")
    query = {"model": model, **({"run_id": run_id} if run_id else {})}
    return f"{base}{URL_PREFIX}{RELEASES_ROUTE}?{urlencode(query)}"


class ReleaseViewLink(BaseOperatorLink):
    """The "Release view" button: the release page of the task's model, focused on its run."""

    name = "Release view"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        """Computed by the task runner after the task ends; stored as an XCom for the UI."""
        model = getattr(operator, "model", None)
        if not model:
            from tfship.config import Settings

            model = Settings.from_env().model
        return release_view_url(str(model), ti_key.run_id)


class ReleaseReportOperator(BaseOperator):
    """Write the run's release record (`releases/<model>/<D>/<run>.json`) and log a short summary; XCom: it.

    Pulls the XComs of the same run: `train` (result), `evaluate` (key "decision") and, one copy
    per host in `hosts` order (map index i is hosts[i]), `publish_model`, `deploy_serving` and
    `canary_serving`. A failed canary copy returns no XCom, so its verdict is read back from the
    host's `releases.jsonl` when that directory is visible here. Skipped or failed upstream
    tasks are recorded as missing pieces; wire it with `trigger_rule="all_done"`.
    """

    template_fields: Sequence[str] = ("day", "model", "hosts")
    operator_extra_links = (ReleaseViewLink(),)
    ui_color = "#ebdef0"

    def __init__(
        self,
        *,
        day: str,
        model: str,
        hosts: Sequence[str],
        train_task_id: str = "train",
        gate_task_id: str = "evaluate",
        publish_task_id: str = "publish_model",
        deploy_task_id: str = "deploy_serving",
        canary_task_id: str = "canary_serving",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.day = day
        self.model = model
        self.hosts = list(hosts)
        self.train_task_id = train_task_id
        self.gate_task_id = gate_task_id
        self.publish_task_id = publish_task_id
        self.deploy_task_id = deploy_task_id
        self.canary_task_id = canary_task_id

    def _day(self, context: Mapping[str, Any]) -> str | None:
        """D from the templated `day`; if resolve_day failed (it renders "None"), from the run itself."""
        from tfship.days import parse_day
        from tfship.errors import ConfigError
        from tfship_airflow.runtime import run_day

        try:
            return parse_day(str(self.day)).isoformat()
        except ConfigError:
            pass
        try:
            return run_day(context).isoformat()
        except ConfigError as err:
            self.log.error("this run has no day D (%s): there is no release to record", err)
            return None

    def _per_host(self, ti: Any, task_id: str, count: int, key: str = "return_value") -> list[Any]:
        """One XCom per map index 0..count-1; a skipped or failed copy gives None."""
        if count == 0:
            return []
        values = ti.xcom_pull(task_ids=task_id, key=key, map_indexes=list(range(count)))
        return list(values) if isinstance(values, list) else [values]

    def _logged_canary(self, serving_dir: str | None, run_id: str, version: Any) -> dict[str, Any] | None:
        """The canary line of this run in the host's release log, when the host's directory is local."""
        from tfship.publish import RELEASE_LOG
        from tfship.release_report import canary_from_release_log

        if not serving_dir:
            return None
        log_path = Path(serving_dir) / RELEASE_LOG
        try:
            text = log_path.read_text(encoding="utf-8")
        except OSError:
            return None  # a remote host: its log is not visible from this worker
        try:
            wanted = int(version)
        except (TypeError, ValueError):
            wanted = None
        return canary_from_release_log(text, run_id=run_id, version=wanted)

    def execute(self, context: Any) -> dict[str, Any] | None:
        from tfship.config import Settings
        from tfship.release_report import release_record, render_release_text, write_release_record
        from tfship.storage import storage_from_settings

        day = self._day(context)
        if day is None:
            return None
        ti = context["ti"]
        run_id = context["run_id"]
        hosts = [str(host) for host in self.hosts]
        train = ti.xcom_pull(task_ids=self.train_task_id)
        decision = ti.xcom_pull(task_ids=self.gate_task_id, key="decision")
        published = self._per_host(ti, self.publish_task_id, len(hosts))
        deploys = self._per_host(ti, self.deploy_task_id, len(hosts))
        canaries = self._per_host(ti, self.canary_task_id, len(hosts))
        # The first of publish/deploy/canary that skipped because a later version already sat there.
        superseded: list[str | None] = [None] * len(hosts)
        for task_id in (self.publish_task_id, self.deploy_task_id, self.canary_task_id):
            for index, reason in enumerate(self._per_host(ti, task_id, len(hosts), key="superseded")):
                superseded[index] = superseded[index] or (reason if isinstance(reason, str) else None)
        settings = Settings.from_env()
        for index, host in enumerate(hosts):
            if canaries[index] is None and published[index] is not None:
                canaries[index] = self._logged_canary(settings.serving_dirs.get(host), run_id, published[index])
        record = release_record(
            model=self.model,
            day=day,
            run_id=run_id,
            hosts=hosts,
            train=train if isinstance(train, Mapping) else None,
            decision=decision if isinstance(decision, Mapping) else None,
            published=published,
            deploys=[value if isinstance(value, Mapping) else None for value in deploys],
            canaries=[value if isinstance(value, Mapping) else None for value in canaries],
            superseded=superseded,
            dag_id=ti.dag_id,
        )
        storage = storage_from_settings(settings)
        path = write_release_record(storage, record)
        self.log.info("%s\n  record: %s\n  view: %s", render_release_text(record), storage.uri(path),
                      release_view_url(self.model, run_id))  # fmt: skip
        return record
