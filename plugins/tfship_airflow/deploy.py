"""The operator that keeps TF Serving deployed on one host (docker provider) and waits for a version."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from tfship.config import ALERT_WEBHOOK_CONN_ID, DEFAULT_REST_PORT
from tfship_airflow.alerts import alert, serving_alert
from tfship_airflow.serving import build_standin_image, docker_url, roll_back, skip_if_superseded


class DeployServingOperator(BaseOperator):
    """Keep one TF Serving container per host and model, then wait until `version` is AVAILABLE.

    Same spec (label `tfship.spec-hash` over image, flags, mounts) and running: the container is
    left alone and hot reload brings the version. Otherwise what carries our name or labels is
    stopped (short timeout: the server ignores SIGTERM) and removed, a new container is created,
    and the downtime is reported. A version that fails to load (END with an error) is moved to
    `.rejected/`, the previous one is waited for, an alert is sent and the task fails. A version
    a higher one already overtook is skipped. XCom: a `DeployResult` dict.

    The Docker engine is reached through the docker provider's `DockerHook` (built in `execute`);
    `docker_conn_id` is a registry login there, so none is needed for local images.

    :param model: the model name (`MODEL_NAME`; the container is `tfserving-<model>`). Templated.
    :param host: the serving host's name (logs, alerts; the REST address unless `rest_host`). Templated.
    :param serving_dir: the model's TF Serving base path on that host, mounted read-only. Templated.
    :param version: the version to wait for, `YYYYMMDDnn`. Templated.
    :param image: the TF Serving image; default: the real `tensorflow/serving` if present, else the stand-in.
    :param docker_url: the engine's address; default DOCKER_HOST, else the local socket. Templated.
    :param rest_host: the address to reach the REST port at, when it is not `host`. Templated.
    :param rest_port: TF Serving's REST port. Templated.
    :param grpc_port: TF Serving's gRPC port. Templated.
    :param poll_wait_s: `--file_system_poll_wait_seconds`: how often the server looks for new versions.
    :param model_config_file: a model config file on the host, mounted into the container.
    :param extra_flags: more `--flag=value` arguments (checked against tensorflow_model_server's flags).
    :param restart_policy: Docker's restart policy for the container.
    :param memory_limit: the container's memory limit (Docker syntax, e.g. "2g"); None for none.
    :param stop_timeout_s: seconds `docker stop` waits before SIGKILL when the container is replaced.
    :param available_timeout_s: how long to wait for the version to become AVAILABLE. Templated.
    :param alert_conn_id: the HTTP connection of the alert webhook.
    """

    template_fields: Sequence[str] = (
        "model",
        "host",
        "serving_dir",
        "version",
        "image",
        "docker_url",
        "rest_host",
        "rest_port",
        "grpc_port",
        "available_timeout_s",
    )
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        model: str,
        host: str,
        serving_dir: str,
        version: int,
        image: str | None = None,
        docker_url: str | None = None,
        rest_host: str | None = None,
        rest_port: int = DEFAULT_REST_PORT,
        grpc_port: int = 8500,
        poll_wait_s: int = 1,
        model_config_file: str | None = None,
        extra_flags: Sequence[str] = (),
        restart_policy: str = "unless-stopped",
        memory_limit: str | None = "2g",
        stop_timeout_s: int = 2,
        available_timeout_s: float = 600,
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

        from tfship.serving.client import ServingClient, VersionLoadFailed, rest_base_url
        from tfship.serving.container import (
            DeployResult,
            ServingSpec,
            choose_image,
            container_alive_check,
            reconcile_container,
        )

        skip_if_superseded(self.host, self.serving_dir, self.version, self.task_id, context)
        engine = docker_url(self.docker_url)
        api = DockerHook(docker_conn_id=None, base_url=engine, version="auto").get_conn()
        image = choose_image(api, self.image or None, build_standin=lambda: build_standin_image(engine))
        spec = ServingSpec(
            model=self.model,
            serving_dir=str(Path(self.serving_dir).resolve()),
            image=image,
            grpc_port=self.grpc_port,
            rest_port=self.rest_port,
            poll_wait_s=self.poll_wait_s,
            model_config_file=self.model_config_file or None,
            extra_flags=self.extra_flags,
            restart_policy=self.restart_policy,
            memory_limit=self.memory_limit or None,
        )
        self.log.info(
            "serving spec %s on %s: image %s, hash %s", spec.container_name, self.host, image, spec.spec_hash()[:12]
        )
        action = reconcile_container(api, spec, stop_timeout_s=self.stop_timeout_s)
        base_url = rest_base_url(self.host, spec.rest_port, self.rest_host)
        client = ServingClient(base_url, self.model)
        downtime_s = None
        if action.action == "kept":
            self.log.info(
                "container %s kept (same spec, running): hot reload brings version %d",
                spec.container_name,
                self.version,
            )
        else:
            alive = container_alive_check(api, action.container_id)
            answered_at = client.wait_until_answering(timeout_s=self.available_timeout_s, check_alive=alive)
            if action.stopped_at is not None:
                downtime_s = round(answered_at - action.stopped_at, 2)
                self.log.warning(
                    "container %s %s (%s): serving was down for %.1f s",
                    spec.container_name,
                    action.action,
                    action.reason,
                    downtime_s,
                )
            else:
                self.log.warning("container %s %s (%s)", spec.container_name, action.action, action.reason)
        started = time.monotonic()
        try:
            client.wait_until_available(self.version, timeout_s=self.available_timeout_s)
        except VersionLoadFailed as err:
            self._fail_version(context, err, base_url)
        finally:
            client.close()
        self.log.info("model %s version %d is AVAILABLE at %s", self.model, self.version, base_url)
        result = DeployResult(
            self.host,
            self.serving_dir,
            self.version,
            image,
            base_url,
            action,
            downtime_s,
            round(time.monotonic() - started, 2),
        )
        return result.to_dict()

    def _fail_version(self, context: Any, error: Exception, base_url: str) -> None:
        detail = str(error)
        try:
            rollback = roll_back(
                serving_dir=self.serving_dir,
                model=self.model,
                versions=[self.version],
                base_url=base_url,
                timeout_s=self.available_timeout_s,
                log=self.log,
            )
            detail += f"\nrolled back: version {rollback['serving']} serves again"
        except Exception as rollback_error:  # noqa: BLE001 - reported in the alert and the failure
            detail += f"\nROLLBACK FAILED: {rollback_error}"
        failure = AirflowFailException(detail)
        payload = serving_alert(
            context,
            title="tfship: model version failed to load",
            model=self.model,
            host=self.host,
            version=self.version,
            check="load",
            detail=detail,
        )
        alert(context, payload, conn_id=self.alert_conn_id, error=failure)
        raise failure from error
