"""The operator that tries a candidate in a throwaway TF Serving before publication (docker provider)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import AirflowFailException

from tfship.config import ALERT_WEBHOOK_CONN_ID, StorageConfig
from tfship_airflow.alerts import alert, task_label
from tfship_airflow.serving import build_standin_image, docker_url


class InfraValidateOperator(BaseOperator):
    """Load the candidate in a throwaway TF Serving container and query it; fail (and alert) if anything is off.

    The candidate is copied from the storage root to a local scratch directory (md5-checked, as
    publication does), served by the image the hosts run (the real `tensorflow/serving` if present,
    else the stand-in) in a container named `tfship-infra-<model>-<D>-<digest8>` on free loopback
    ports, and removed afterwards, also on failure. Checks: the copy matches the manifest, the
    version loads and is AVAILABLE within `available_timeout_s` (warmup records, if any, are
    replayed by the server first), the `serving_default` signature is the project's, answers are
    probabilities, and the candidate's canary rows answer as its offline probabilities. The result
    goes beside the candidate (`models/<m>/infra_validation/<D>-<digest8>.json`) and to XCom (a
    failed run pushes it too, for the release record). A failure of the candidate fails the task
    without retries, with an alert naming the check; a failure of Docker or storage is retried.
    A rerun (a cleared task, a retry after the record was written) whose candidate already passed
    on the same image returns that recorded pass (`reused`: true) without starting a container.

    :param candidate: the candidate's path on the storage root (`train`'s output). Templated.
    :param day: D of the run (the version number the throwaway server sees). Templated.
    :param model: the model name. Templated.
    :param storage: the storage root the candidate is read from.
    :param work_dir: the local directory under which the scratch copy is made (`<work_dir>/infra/`). Templated.
    :param image: the TF Serving image; default: the real `tensorflow/serving` if present, else the stand-in.
    :param docker_url: the engine's address; default DOCKER_HOST, else the local socket. Templated.
    :param available_timeout_s: how long the version may take to become AVAILABLE. Templated.
    :param max_abs_diff: the largest difference from the offline probabilities. Templated.
    :param min_argmax_agreement: the least share of rows whose argmax matches the offline one. Templated.
    :param alert_conn_id: the HTTP connection of the alert webhook.
    """

    template_fields: Sequence[str] = (
        "candidate",
        "day",
        "model",
        "work_dir",
        "docker_url",
        "available_timeout_s",
        "max_abs_diff",
        "min_argmax_agreement",
    )
    ui_color = "#e8daef"

    def __init__(
        self,
        *,
        candidate: str,
        day: str,
        model: str,
        storage: StorageConfig,
        work_dir: str,
        image: str | None = None,
        docker_url: str | None = None,
        available_timeout_s: float = 300,
        max_abs_diff: float = 1e-3,
        min_argmax_agreement: float = 0.99,
        alert_conn_id: str = ALERT_WEBHOOK_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.candidate = candidate
        self.day = day
        self.model = model
        self.storage = storage
        self.work_dir = work_dir
        self.image = image
        self.docker_url = docker_url
        self.available_timeout_s = available_timeout_s
        self.max_abs_diff = max_abs_diff
        self.min_argmax_agreement = min_argmax_agreement
        self.alert_conn_id = alert_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.providers.docker.hooks.docker import DockerHook

        from tfship.alerts import build_alert
        from tfship.config import Settings
        from tfship.paths import infra_validation_path
        from tfship.release.transfer import Source
        from tfship.serving.container import choose_image
        from tfship.serving.infra_checks import recorded_pass, write_result
        from tfship.serving.infra_validate import InfraPolicy, validate_candidate

        engine = docker_url(self.docker_url)
        placement = Settings.from_env()  # this worker's TFSHIP_WORKER_CONTAINER and TFSHIP_SERVING_IMAGE
        api = DockerHook(docker_conn_id=None, base_url=engine, version="auto").get_conn()
        requested = self.image or placement.serving_image or None
        image = choose_image(api, requested, build_standin=lambda: build_standin_image(engine))
        storage = self.storage.open()
        recorded = recorded_pass(storage, str(self.candidate), image=image)
        if recorded is not None:
            where = storage.uri(infra_validation_path(str(self.candidate)))
            self.log.info(
                "\n%s\n  already passed in run %s (same digest, same image), recorded at %s: no container started",
                recorded.render(),
                recorded.run_id,
                where,
            )
            return recorded.to_dict() | {"record": where, "reused": True}
        # InfraPolicy's canary (the shape, not the latency), with this task's tolerances.
        canary = replace(
            InfraPolicy().canary,
            max_abs_diff=float(self.max_abs_diff),
            min_argmax_agreement=float(self.min_argmax_agreement),
        )
        result = validate_candidate(
            api,
            source=Source(self.storage),
            candidate=str(self.candidate),
            model=self.model,
            day=str(self.day),
            image=image,
            work_root=Path(self.work_dir) / "infra",
            policy=InfraPolicy(available_timeout_s=float(self.available_timeout_s), canary=canary),
            run_id=context.get("run_id"),
            worker_container=placement.worker_container,
        )
        path = write_result(storage, result)
        data = result.to_dict() | {"record": storage.uri(path)}
        block = result.render()
        if result.passed:
            self.log.info("\n%s\n  recorded at %s", block, storage.uri(path))
            return data
        self.log.error("\n%s\n  recorded at %s", block, storage.uri(path))
        ti = context["ti"]
        ti.xcom_push(key=BaseXCom.XCOM_RETURN_KEY, value=data)  # a failed task returns nothing: the record needs it
        failure = AirflowFailException(
            f"infra validation of {self.candidate} failed, nothing was published: {result.reason}"
        )
        payload = build_alert(
            title="tfship: candidate failed infra validation, nothing published",
            model=self.model,
            day=str(self.day),
            host=None,
            endpoint=image,
            file=str(self.candidate),
            check=",".join(result.failed_checks),
            detail=f"{result.reason}\n\n{block}",
            log_url=getattr(ti, "log_url", None),
            task=task_label(context),
        )
        alert(context, payload, conn_id=self.alert_conn_id, error=failure)
        raise failure
