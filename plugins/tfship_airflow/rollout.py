"""The operator for one host's part of a rolling release: drain, load, canary through the label, promote or revert."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from tfship.config import ALERT_WEBHOOK_CONN_ID, DEFAULT_GRPC_PORT, DEFAULT_REST_PORT
from tfship.constants import LogEvent, RolloutStep, ServingLabel
from tfship_airflow.alerts import alert, serving_alert
from tfship_airflow.release_view import ReleaseViewLink
from tfship_airflow.serving import build_standin_image, docker_url, skip_if_superseded

EARLIER_HOST_FAILED = ("failed", "upstream_failed")
HOST_RELEASE_KEY = "host_release"  # XCom of a copy that stopped or skipped: its HostRelease, for the record


class ReleaseHostOperator(BaseOperator):
    """Release a published version on one serving host, as one step of a rolling release over the hosts.

    Mapped over the hosts with `max_active_tis_per_dagrun` as the batch size, copy k first waits for
    the copies of the earlier batches and stops (skips, touching nothing) when one of them failed: a
    failed canary on host k leaves the hosts after k as they were. Then, on its host:

    1. take the host out of the load balancer (nginx `down` + graceful reload; never the last host in);
    2. keep or (re)create the TF Serving container (docker provider; the spec's hash decides) serving
       the serving dir's own model config, and refuse a host whose memory limit cannot hold the stable
       and the new version side by side;
    3. load the new version next to the stable one; it becomes AVAILABLE after its warmup is replayed;
    4. point the `canary` label at it and send the canary set to the label (REST or gRPC);
    5. passed: `stable` moves to the new version, the old one is unloaded; failed: `stable` stays,
       the new version goes to `.rejected/`, the old one is checked to answer, an alert names the
       host, the task fails;
    6. put the host back into the balancer.
    XCom: a `HostRelease` dict (order, step, labels, deploy, canary, memory).

    :param model: the model name. Templated.
    :param host: the serving host's name. Templated.
    :param serving_dir: the model's TF Serving base path on that host. Templated.
    :param version: the version to release, `YYYYMMDDnn`. Templated.
    :param hosts: every serving host (`ServingHost`s): where this host's TF Serving answers (address,
        REST and gRPC ports), and the upstreams the balancer renders.
    :param image: the TF Serving image; default: the real `tensorflow/serving` if present, else the stand-in.
    :param docker_url: the host's Docker engine; default DOCKER_HOST, else the local socket.
    :param extra_flags: more `--flag=value` for the server (checked against tensorflow_model_server's flags).
    :param memory_limit: the container's memory limit (Docker syntax); None for none.
    :param balancer_dir: the directory of the balancer's generated upstreams; empty: no balancer.
    :param balancer_reload: how the balancer reloads: "pid:<file>" or "docker:<container>".
    :param drain_s: how long in-flight requests get to finish after the host is taken out.
    :param batch_size: hosts released at once (give the same number as `max_active_tis_per_dagrun`).
    :param available_timeout_s: how long to wait for the version to become AVAILABLE. Templated.
    :param canary_protocol: "rest" or "grpc". Templated.
    :param concurrency: canary clients. Templated.
    :param accuracy_floor: the canary's least accuracy on its labels. Templated.
    :param latency_budget_ms: the canary's p99 limit. Templated.
    :param alert_conn_id: the HTTP connection of the alert webhook.
    """

    template_fields: Sequence[str] = (
        "model",
        "host",
        "serving_dir",
        "version",
        "available_timeout_s",
        "canary_protocol",
        "concurrency",
        "accuracy_floor",
        "latency_budget_ms",
    )
    ui_color = "#d5f5e3"
    operator_extra_links = (ReleaseViewLink(),)

    def __init__(
        self,
        *,
        model: str,
        host: str,
        serving_dir: str,
        version: int,
        hosts: Sequence[Any] = (),
        image: str | None = None,
        docker_url: str | None = None,
        extra_flags: Sequence[str] = (),
        memory_limit: str | None = "2g",
        balancer_dir: str = "",
        balancer_reload: str = "",
        drain_s: float = 2.0,
        batch_size: int = 1,
        available_timeout_s: float = 600,
        canary_protocol: str = "rest",
        concurrency: int = 4,
        accuracy_floor: float = 0.9,
        latency_budget_ms: float = 1000,
        alert_conn_id: str = ALERT_WEBHOOK_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model, self.host, self.serving_dir, self.version = model, host, serving_dir, version
        self.hosts = list(hosts)
        self.image, self.docker_url, self.extra_flags = image, docker_url, tuple(extra_flags)
        self.memory_limit, self.balancer_dir, self.balancer_reload = memory_limit, balancer_dir, balancer_reload
        self.drain_s, self.batch_size, self.available_timeout_s = drain_s, batch_size, available_timeout_s
        self.canary_protocol, self.concurrency = canary_protocol, concurrency
        self.accuracy_floor, self.latency_budget_ms, self.alert_conn_id = (
            accuracy_floor,
            latency_budget_ms,
            alert_conn_id,
        )

    # ------------------------------------------------------------ the order of the hosts

    def _wait_for_earlier_hosts(self, context: Any) -> None:
        """Return once every copy of an earlier batch succeeded; stop (skip) when one of them failed."""
        ti = context["ti"]
        index = getattr(ti, "map_index", -1) or 0
        earlier = index - index % max(1, self.batch_size)
        while earlier > 0:
            states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[context["run_id"]])
            mine = states.get(context["run_id"], {})
            seen = [mine.get(f"{ti.task_id}_{j}") for j in range(earlier)]
            failed = [j for j, state in enumerate(seen) if state in EARLIER_HOST_FAILED]
            if failed:
                self._stop(context, f"the rollout stopped at an earlier host (copy {failed[0]}): {self.host} untouched")
            if all(state in ("success", "skipped") for state in seen):
                return
            time.sleep(5)

    def _stop(self, context: Any, reason: str, step: RolloutStep = RolloutStep.STOPPED) -> None:
        from tfship.serving.rollout import HostRelease

        record = HostRelease(self.host, self.serving_dir, self.version, self._order(context), str(step), reason=reason)
        context["ti"].xcom_push(key=HOST_RELEASE_KEY, value=record.to_dict())
        raise AirflowSkipException(reason)

    @staticmethod
    def _order(context: Any) -> int:
        return max(0, getattr(context["ti"], "map_index", 0) or 0)

    # ------------------------------------------------------------ the release on this host

    def execute(self, context: Any) -> dict[str, Any]:
        from tfship.serving.balancer import Backend, Balancer, reloader

        self._wait_for_earlier_hosts(context)
        try:
            skip_if_superseded(self.host, self.serving_dir, self.version, self.task_id, context)
        except AirflowSkipException as skipped:
            self._stop(context, str(skipped), RolloutStep.SUPERSEDED)
        balancer = None
        if self.balancer_dir:
            backends = [Backend.from_host(h) for h in self.hosts]
            balancer = Balancer(self.balancer_dir, backends, reloader(self.balancer_reload))
        drained = balancer.drain(self.host) if balancer is not None else False
        if drained:
            self.log.info("host %s out of the balancer; %.1f s for its requests in flight", self.host, self.drain_s)
            time.sleep(self.drain_s)
        try:
            return self._release(context, drained)
        finally:
            if drained:
                balancer.restore(self.host)  # type: ignore[union-attr]
                self.log.info("host %s back in the balancer", self.host)

    def _serving_host(self) -> Any:
        """This host's entry of `hosts` (address and ports), or one made from its name and the default ports."""
        from tfship.config import ServingHost

        mine = [h for h in self.hosts if h.name == self.host]
        return (
            mine[0]
            if mine
            else ServingHost(self.host, self.serving_dir, rest_port=DEFAULT_REST_PORT, grpc_port=DEFAULT_GRPC_PORT)
        )

    def _rollout(self) -> Any:
        from airflow.providers.docker.hooks.docker import DockerHook

        from tfship.config import Settings
        from tfship.release.serving_dir import ServingDir
        from tfship.serving.canary import CanaryPolicy
        from tfship.serving.client import ServingClient
        from tfship.serving.container import ServingSpec, choose_image
        from tfship.serving.grpc_client import GrpcServingClient
        from tfship.serving.rollout import HostRollout

        engine = docker_url(self.docker_url)
        # This worker's placement of the containers it starts (TFSHIP_WORKER_CONTAINER, TFSHIP_SERVING_VOLUME).
        placement = Settings.from_env()
        # docker_conn_id is a registry login, not the daemon: none is needed for local images.
        api = DockerHook(docker_conn_id=None, base_url=engine, version="auto").get_conn()
        requested = self.image or placement.serving_image or None
        image = choose_image(api, requested, build_standin=lambda: build_standin_image(engine))
        where = self._serving_host()
        spec = ServingSpec(
            model=self.model,
            serving_dir=str(Path(self.serving_dir).resolve()),
            host=self.host,
            image=image,
            grpc_port=where.grpc_port,
            rest_port=where.rest_port,
            labelled=True,
            extra_flags=self.extra_flags,
            memory_limit=self.memory_limit or None,
            network_mode=placement.serving_network_mode,
            serving_volume=placement.serving_volume,
        )
        policy = CanaryPolicy(
            concurrency=self.concurrency,
            accuracy_floor=self.accuracy_floor,
            latency_budget_ms=self.latency_budget_ms,
            protocol=self.canary_protocol,
        )
        return HostRollout(
            api=api,
            spec=spec,
            serving_dir=ServingDir(self.serving_dir),
            version=self.version,
            rest=ServingClient(where.rest_url, self.model),
            grpc=GrpcServingClient(where.grpc_target, self.model),
            canary_policy=policy,
            available_timeout_s=self.available_timeout_s,
            log=self.log,
        )

    def _release(self, context: Any, drained: bool) -> dict[str, Any]:
        from tfship.serving.canary import CANARY_FILE, CanaryResult, load_canary
        from tfship.serving.client import VersionLoadFailed
        from tfship.serving.rollout import HostRelease, MemoryRefused

        rollout = self._rollout()
        stable = rollout.labelled.stable_before(self.version)
        try:
            deploy, memory = rollout.load_beside(stable)
        except MemoryRefused as err:
            self._fail(context, err, "tfship: serving host cannot hold two versions", "memory", str(err))
        except VersionLoadFailed as err:
            detail = str(err)
            try:
                _labels, rollback = rollout.revert(stable)
                detail += f"\nrolled back: version {rollback['serving']} is {ServingLabel.STABLE} again"
            except Exception as rollback_error:  # noqa: BLE001 - reported in the alert and the failure
                detail += f"\nROLLBACK FAILED: {rollback_error}"
            self._fail(context, err, "tfship: model version failed to load", "load", detail)
        self._check_reachable(rollout, "before the canary")
        verdict = rollout.canary(load_canary(rollout.serving_dir.version_dir(self.version) / CANARY_FILE))
        result = CanaryResult(self.host, context.get("run_id"), verdict)
        order = self._order(context)

        def record(step: RolloutStep, labels: dict | None, canary: CanaryResult, reason: str = "") -> dict[str, Any]:
            rollout.serving_dir.log.record_event(LogEvent.CANARY, canary.to_dict())
            return HostRelease(
                self.host,
                self.serving_dir,
                self.version,
                order,
                str(step),
                stable,
                labels,
                deploy,
                canary.to_dict(),
                memory.to_dict(),
                drained,
                reason,
            ).to_dict()

        if verdict.passed:
            labels = rollout.promote()
            self.log.info(
                "\n%s\nhost %s: version %s is %s now", verdict.render(), self.host, self.version, ServingLabel.STABLE
            )
            return record(RolloutStep.PROMOTED, labels, result)
        self.log.error("\n%s", verdict.render())
        if "http" in verdict.failed_checks:
            self._check_reachable(rollout, "during the canary")
        detail = verdict.render()
        try:
            labels, rollback = rollout.revert(stable)
            result = CanaryResult(self.host, result.run_id, verdict, rollback=rollback)
            detail += f"\nrolled back: version {rollback['serving']} is {ServingLabel.STABLE} again"
        except Exception as err:  # noqa: BLE001 - recorded, alerted and raised below
            labels, result = None, CanaryResult(self.host, result.run_id, verdict, rollback_error=str(err))
            detail += f"\nROLLBACK FAILED: {err}"
        context["ti"].xcom_push(key=HOST_RELEASE_KEY, value=record(RolloutStep.ROLLED_BACK, labels, result, detail))
        failure = AirflowFailException(
            f"canary of model {self.model} version {self.version} on {self.host} failed; "
            f"the rollout stops here:\n{detail}"
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

    def _fail(self, context: Any, error: Exception, title: str, check: str, detail: str) -> None:
        """Alert with the host and version, then fail the task (no retry: the host or the model is wrong)."""
        failure = AirflowFailException(detail)
        payload = serving_alert(
            context, title=title, model=self.model, host=self.host, version=self.version, check=check, detail=detail
        )
        alert(context, payload, conn_id=self.alert_conn_id, error=failure)
        raise failure from error

    def _check_reachable(self, rollout: Any, when: str) -> None:
        """Fail without touching the serving dir when nothing answers: rolling back would judge the model."""
        from tfship.serving.client import ServingUnreachable

        reason = rollout.rest.unreachable()
        if reason is not None:
            raise ServingUnreachable(
                f"serving on {self.host} unreachable {when}: {reason}. Version {self.version} stays in place and "
                "nothing was rolled back; clear this task once the server answers"
            )
