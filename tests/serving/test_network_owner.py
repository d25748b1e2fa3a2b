"""A TF Serving container in its worker's network namespace, after that worker restarts.

The stack's serving hosts start TF Serving with network_mode `container:<worker>`. A worker that
dies and is started again gets a new namespace; the TF Serving container keeps the old one, which
has lost its interfaces. Reconciling the same spec must then recreate it, not keep it.
"""

from __future__ import annotations

import time

import pytest

from tests.serving.models import publish_copy

pytestmark = pytest.mark.docker
VERSION = 2024010100


def _fetch_from_owner(docker_api, owner: str, model: str) -> tuple[int, str]:
    """GET the model's status from inside the owner's namespace (127.0.0.1:8501 there)."""
    url = f"http://127.0.0.1:8501/v1/models/{model}"
    fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    run = docker_api.exec_create(owner, ["python3", "-c", fetch])
    output = docker_api.exec_start(run["Id"]).decode("utf-8", "replace")
    return docker_api.exec_inspect(run["Id"])["ExitCode"], output


def _until_answers(docker_api, owner: str, model: str, timeout_s: float = 180) -> str:
    deadline = time.monotonic() + timeout_s
    code, output = 1, ""
    while time.monotonic() < deadline:
        code, output = _fetch_from_owner(docker_api, owner, model)
        if code == 0 and "AVAILABLE" in output:
            return output
        time.sleep(1)
    raise AssertionError(f"TF Serving did not answer inside {owner}'s namespace: exit {code}, {output!r}")


def test_a_restarted_network_owner_gets_its_serving_container_recreated(
    serving_image, docker_api, serving_model, model_store, tmp_path
):
    from tfship.serving.container import ServingSpec, reconcile_container

    owner = f"{serving_model}-owner"[:60]
    for old in docker_api.containers(all=True, filters={"name": f"^/{owner}$"}):
        docker_api.remove_container(old["Id"], force=True)
    # The owner plays the serving host's worker: any long-lived process with a Python to fetch with.
    created = docker_api.create_container(
        serving_image, ["-c", "import time; time.sleep(3600)"], entrypoint=["python3"], name=owner,
        host_config=docker_api.create_host_config(network_mode="none"),
    )  # fmt: skip
    try:
        docker_api.start(created["Id"])
        base = tmp_path / "serving"
        publish_copy(model_store["good"], base, VERSION)
        spec = ServingSpec(
            model=serving_model, serving_dir=str(base), image=serving_image, network_mode=f"container:{owner}"
        )
        first = reconcile_container(docker_api, spec)
        _until_answers(docker_api, owner, serving_model)
        assert reconcile_container(docker_api, spec).action == "kept"

        docker_api.kill(owner)  # the worker dies and is started again: same container, new namespace
        docker_api.start(owner)
        code, output = _fetch_from_owner(docker_api, owner, serving_model)
        assert code != 0, f"the old namespace still answered: {output!r}"

        again = reconcile_container(docker_api, spec)
        assert again.action == "recreated" and again.container_id != first.container_id, again
        assert f"{owner} restarted" in again.reason
        assert first.container_id in again.removed
        _until_answers(docker_api, owner, serving_model)
        assert reconcile_container(docker_api, spec).action == "kept"
    finally:
        docker_api.remove_container(created["Id"], force=True)
