"""What the serving tasks share: skipping an overtaken version, rolling back, the stand-in image, wiring.

The logic is in `tfship.serving` and `tfship.release.serving_dir`; the operators are in
deploy.py and canary.py, the manual rollback in rollback.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from tfship.errors import ConfigError
from tfship_airflow.publish import SUPERSEDED_KEY

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"


def serving_kwargs(result: Mapping[str, Any]) -> dict[str, Any]:
    """`host`, `serving_dir` and `version` of an upstream result: the next serving task's arguments.

    Used as `DeployServingOperator.partial(...).expand_kwargs(publish_model.output.map(serving_kwargs))`,
    so host h's copy works on what host h's copy upstream published.
    """
    return {"host": result["host"], "serving_dir": result["serving_dir"], "version": int(result["version"])}


def docker_url(requested: str | None = None) -> str:
    """The engine to talk to: the argument, else DOCKER_HOST, else the default socket."""
    return requested or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL


def build_standin_image(docker_url: str) -> str:
    """Build (or find) the stand-in image with scripts/serving-image; only used where the real image is absent."""
    import subprocess

    from tfship.config import PROJECT_ROOT

    # A subprocess: serving_standin lives at the project root, which is not on a worker's sys.path.
    done = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "serving-image")],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": docker_url},
    )
    if done.returncode != 0:
        raise ConfigError(f"scripts/serving-image failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def skip_if_superseded(host: str, serving_dir: str, version: int, task_id: str, context: Any = None) -> None:
    """Skip when a higher version already sits in the serving dir (a backfill overtaken by a newer run).

    TF Serving's `latest` policy will never load the lower number, so waiting for it or sending it
    a canary would only fail, and a failed canary would reject the good newer version's backup.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from tfship.release.serving_dir import ServingDir

    newer = ServingDir(serving_dir).superseded_by(version)
    if newer is not None:
        reason = f"version {version} is superseded by version {newer} in {serving_dir}; serving untouched"
        if context is not None:
            context["ti"].xcom_push(key=SUPERSEDED_KEY, value={"host": host, "reason": reason})
        raise AirflowSkipException(f"{task_id}: {reason}")


def roll_back(
    *, serving_dir: str, model: str, versions: Sequence[int], base_url: str, timeout_s: float, log: Any
) -> dict[str, Any]:
    """Move versions to `.rejected/`, wait for the previous one to serve and answer its canary; return the result."""
    from tfship.release.serving_dir import ServingDir
    from tfship.serving.client import ServingClient
    from tfship.serving.rollback import reject_versions

    client = ServingClient(base_url, model)
    try:
        result = reject_versions(ServingDir(serving_dir), list(versions), client, timeout_s=timeout_s)
    finally:
        client.close()
    log.warning("rolled back %s: rejected %s, version %d serves again", serving_dir, list(versions), result.serving)
    return result.to_dict()
