"""The report task: the run's release record written to the storage root, and a summary in the log."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from tfship.config import ServingHost, StorageConfig
from tfship_airflow.release_view import ReleaseViewLink, release_view_url


def _by_host(results: Iterable[Any] | None) -> dict[str, Mapping[str, Any]]:
    """Typed results (dicts carrying `host`) by host; a skipped or failed copy left none."""
    found: dict[str, Mapping[str, Any]] = {}
    for result in results or ():
        if isinstance(result, Mapping) and isinstance(result.get("host"), str):
            found[result["host"]] = result
    return found


class ReleaseReportOperator(BaseOperator):
    """Write the run's release record (`releases/<model>/<D>/<run>.json`) and log a short summary; XCom: it.

    Give it the outputs of the tasks it reports on (XComArgs, resolved when it runs): the
    candidate from `train`, the gate decision, and the mapped `publish_model`, `deploy_serving`
    and `canary_serving` outputs, each result naming its host. A skipped or failed upstream
    leaves a missing piece, recorded as such. A failed canary returns nothing, so its verdict is
    read back from the host's release log when that serving dir is visible here. Run it as a
    teardown (or with `trigger_rule="all_done"`) so it records failed and held runs too.

    :param day: D of the run; when it is missing (resolve_day failed), D is taken from the run itself. Templated.
    :param model: the model name. Templated.
    :param hosts: every serving host of the release, in order.
    :param storage: the storage root the record is written to.
    :param candidate: what `train` returned (a `Candidate` dict). Templated.
    :param decision: the gate's decision (a `GateDecision` dict). Templated.
    :param publications: `PublishResult` dicts, one per host that published. Templated.
    :param deployments: `DeployResult` dicts. Templated.
    :param canaries: `CanaryResult` dicts. Templated.
    :param host_releases: sequences of `HostRelease` dicts from a rolling release (`release_host`'s outputs
        and the records its stopped or failed copies left); their deploy and canary count as above. Templated.
    :param holds: sequences of `{"host", "reason"}` left by copies that skipped because a later
        version had overtaken theirs (the XCom key "superseded" of publish, deploy and canary). Templated.
    :param drift: check_drift's report (a `DriftReport` dict). Templated.
    :param infra: infra_validate's result (an `InfraValidationResult` dict). Templated.
    """

    template_fields: Sequence[str] = (
        "day",
        "model",
        "candidate",
        "decision",
        "publications",
        "deployments",
        "canaries",
        "host_releases",
        "holds",
        "drift",
        "infra",
    )
    operator_extra_links = (ReleaseViewLink(),)
    ui_color = "#ebdef0"

    def __init__(
        self,
        *,
        day: Any,
        model: str,
        hosts: Sequence[ServingHost],
        storage: StorageConfig,
        candidate: Any = None,
        decision: Any = None,
        publications: Any = (),
        deployments: Any = (),
        canaries: Any = (),
        host_releases: Any = (),
        holds: Any = (),
        drift: Any = None,
        infra: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.day = day
        self.model = model
        self.hosts = list(hosts)
        self.storage = storage
        self.candidate = candidate
        self.decision = decision
        self.publications = publications
        self.deployments = deployments
        self.canaries = canaries
        self.host_releases = host_releases
        self.holds = holds
        self.drift = drift
        self.infra = infra

    def render_template(self, content: Any, context: Any, jinja_env: Any = None, seen_oids: Any = None) -> Any:
        """As BaseOperator's, except that a task which never pushed (failed, skipped) gives None.

        The report runs after any outcome: a run that stopped at the sensor still gets its record,
        at once, instead of failing on a missing XCom and waiting out its retries.
        """
        from airflow.sdk.exceptions import XComNotFound

        try:
            return super().render_template(content, context, jinja_env, seen_oids)
        except XComNotFound as missing:
            self.log.info("no value for the report: %s", missing)
            return None

    def _day(self, context: Mapping[str, Any]) -> str | None:
        """D from `day`; if resolve_day failed (no value), from the run itself."""
        from tfship.days import parse_day
        from tfship.errors import ConfigError
        from tfship_airflow.runtime import run_day

        if self.day:
            try:
                return parse_day(str(self.day)).isoformat()
            except ConfigError:
                pass
        try:
            return run_day(context).isoformat()
        except ConfigError as err:
            self.log.error("this run has no day D (%s): there is no release to record", err)
            return None

    def _superseded(self) -> dict[str, str]:
        """Host -> why its copy left it alone (the first task that said so)."""
        reasons: dict[str, str] = {}
        for hold_list in self.holds or ():
            for hold in hold_list or ():
                if isinstance(hold, Mapping) and isinstance(hold.get("reason"), str):
                    reasons.setdefault(str(hold.get("host")), hold["reason"])
        return reasons

    def execute(self, context: Any) -> dict[str, Any] | None:
        from tfship.constants import LogEvent
        from tfship.release.serving_dir import ServingDir
        from tfship.report.record import release_record, render_release_text, write_release_record

        day = self._day(context)
        if day is None:
            return None
        run_id = context["run_id"]
        published = _by_host(self.publications)
        deployed = _by_host(self.deployments)
        canaries = _by_host(self.canaries)
        superseded = self._superseded()
        rollouts: dict[str, Mapping[str, Any]] = {}
        for releases in self.host_releases or ():
            for host_release in _by_host(releases).values():
                rollouts[host_release["host"]] = host_release
                if host_release.get("deploy"):
                    deployed.setdefault(host_release["host"], host_release["deploy"])
                if host_release.get("canary"):
                    canaries.setdefault(host_release["host"], host_release["canary"])
                if host_release.get("step") == "superseded":
                    superseded.setdefault(host_release["host"], host_release.get("reason", ""))
        versions, canary_list = [], []
        for host in self.hosts:
            version = published.get(host.name, {}).get("version")
            canary = canaries.get(host.name)
            if canary is None and version is not None:
                # A failed canary returns no XCom; its line is in the host's log when that disk is visible here.
                canary = ServingDir(host.serving_dir).log.last_event(LogEvent.CANARY, run_id=run_id, version=version)
            versions.append(version)
            canary_list.append(canary)
        record = release_record(
            model=self.model,
            day=day,
            run_id=run_id,
            hosts=[host.name for host in self.hosts],
            train=self.candidate if isinstance(self.candidate, Mapping) else None,
            decision=self.decision if isinstance(self.decision, Mapping) else None,
            published=versions,
            deploys=[deployed.get(host.name) for host in self.hosts],
            canaries=canary_list,
            superseded=[superseded.get(host.name) for host in self.hosts],
            rollouts=[rollouts.get(host.name) for host in self.hosts],
            dag_id=context["ti"].dag_id,
            drift=self.drift if isinstance(self.drift, Mapping) else None,
            infra=self.infra if isinstance(self.infra, Mapping) else None,
        )
        storage = self.storage.open()
        path = write_release_record(storage, record)
        self.log.info(
            "%s\n  record: %s\n  view: %s",
            render_release_text(record),
            storage.uri(path),
            release_view_url(self.model, run_id),
        )
        return record
