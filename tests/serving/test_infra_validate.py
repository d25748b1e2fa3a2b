"""infra_validate before publish_model in real Airflow runs (`dag.test()`), real containers of the hosts' image.

A good candidate passes and is published. A SavedModel with a wrong signature, one with missing
variables and one whose outputs are not probabilities are each stopped with the reason: the run
fails, publish_model never runs, the serving dir and its releases.jsonl keep every byte, the alert
names the failed check, and the result is recorded beside the candidate. No container or scratch
copy is left behind either way. A rerun of a candidate that passed stands on the recorded pass
without starting a container; a gate that says no skips infra validation altogether.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pendulum
import pytest

from tests.airflow_support import register_dag
from tests.publish.helpers import numeric_children, release_lines, tree
from tests.serving.conftest import say
from tests.serving.infra_models import BAD_KINDS, export_candidate, store_candidate

pytestmark = [pytest.mark.docker, pytest.mark.airflow]
DAY = dt.date(2026, 11, 4)
VERSION = 2026110400
# What each bad candidate must be stopped by (the first failed check names the reason).
STOPPED_BY = {"wrong_signature": "signature", "no_variables": "load", "logits": "probabilities"}


class Site:
    """The storage root with the candidates, one serving host's dir, the scratch root."""

    def __init__(self, root: Path) -> None:
        from tfship.storage import LocalStorage

        self.storage = LocalStorage(f"file://{root / 'storage'}")
        self.serving_dir = root / "serving" / "mnist"
        self.work_dir = root / "work"
        self.candidates: dict[str, str] = {}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("infra")
    site = Site(root)
    for kind in ("good", *BAD_KINDS):
        local = export_candidate(root / "exports" / kind, kind)
        site.candidates[kind] = store_candidate(site.storage, local, DAY)
    return site


def _run(site: Site, kind: str, image: str, docker_url: str, *, gate: bool | None = None):
    """A DAG as the daily one wires it: [evaluate >>] infra_validate >> publish_model, run once with dag.test().

    With `gate`, the daily DAG's short circuit comes first and answers that.
    """
    from airflow.sdk import DAG, task

    from tfship.config import StorageConfig
    from tfship_airflow.infra_validate import InfraValidateOperator
    from tfship_airflow.publish import PublishModelOperator

    candidate = site.candidates[kind]
    with DAG(
        dag_id=f"tfship_infra_{kind}" if gate is None else f"tfship_infra_{kind}_gated",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"day": DAY.isoformat(), "timeout": 240},
        render_template_as_native_obj=True,
    ) as dag:
        storage = StorageConfig(site.storage.root_uri)
        infra = InfraValidateOperator(
            task_id="infra_validate",
            candidate=candidate,
            day="{{ params.day }}",
            model="mnist",
            storage=storage,
            work_dir=str(site.work_dir),
            image=image,
            docker_url=docker_url,
            available_timeout_s="{{ params.timeout }}",
            retries=0,
        )
        publish = PublishModelOperator(
            task_id="publish_model",
            candidate=candidate,
            day="{{ params.day }}",
            storage=storage,
            host="local",
            serving_dir=str(site.serving_dir),
            retries=0,
        )
        infra >> publish
        if gate is not None:

            @task.short_circuit(ignore_downstream_trigger_rules=False)
            def evaluate() -> bool:
                return gate

            evaluate() >> infra
    register_dag(dag)
    return dag.test()


def _states(run) -> dict[str, str]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
        return {ti.task_id: str(ti.state) for ti in rows}


def _xcom(run, task_id: str) -> dict:
    """What a task of the run returned."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        [row] = session.query(XComModel).filter(
            XComModel.dag_id == run.dag_id,
            XComModel.run_id == run.run_id,
            XComModel.task_id == task_id,
            XComModel.key == "return_value",
        )
        value = row.value
    return json.loads(value) if isinstance(value, str) else value


def _created(docker_api, since: float, until: float) -> list[str]:
    """Names of the throwaway containers the engine created between two times (its event log)."""
    from tfship.serving.infra_validate import MANAGED_VALUE

    events = docker_api.events(
        since=int(since),
        until=int(until) + 1,
        filters={"type": "container", "event": "create", "label": f"tfship.managed={MANAGED_VALUE}"},
        decode=True,
    )
    return [event["Actor"]["Attributes"]["name"] for event in events]


def _record_bytes(site: Site, kind: str) -> bytes | None:
    from tfship.paths import infra_validation_path

    path = infra_validation_path(site.candidates[kind])
    if not site.storage.exists(path):
        return None
    with site.storage.open_read(path) as handle:
        return handle.read()


def _result(site: Site, kind: str) -> dict:
    from tfship.paths import infra_validation_path

    with site.storage.open_read(infra_validation_path(site.candidates[kind])) as handle:
        return json.loads(handle.read())


def _assert_nothing_left(site: Site, docker_api) -> None:
    from tfship.serving.infra_validate import MANAGED_VALUE

    leftovers = docker_api.containers(all=True, filters={"label": f"tfship.managed={MANAGED_VALUE}"})
    assert [c["Names"] for c in leftovers] == []
    assert list((site.work_dir / "infra").iterdir()) == []


@pytest.fixture(scope="module")
def published(site: Site, serving_image: str, docker_base_url: str) -> dict:
    """The good candidate through the DAG: validated, then published (the state the bad ones must not touch)."""
    import docker

    since = time.time()
    run = _run(site, "good", serving_image, docker_base_url)
    with docker.APIClient(base_url=docker_base_url, version="auto", timeout=120) as api:
        created = _created(api, since, time.time())
    return {"run": run, "states": _states(run), "tree": tree(site.serving_dir), "created": created}


def test_a_good_candidate_passes_and_only_then_is_published(site: Site, published: dict, docker_api) -> None:
    assert published["run"].state == "success", published["states"]
    assert published["states"] == {"infra_validate": "success", "publish_model": "success"}
    assert numeric_children(site.serving_dir) == [str(VERSION)]
    result = _result(site, "good")
    assert result["passed"] is True and result["failed_checks"] == []
    names = [check["name"] for check in result["checks"]]
    assert names == ["stage", "load", "available", "warmup", "signature", "probabilities", "canary"]
    assert result["image"] and result["container"] == f"tfship-infra-mnist-{site.candidates['good'].rsplit('/')[-1]}"
    assert result["canary"]["rows"] == 64 and result["canary"]["max_abs_diff"] <= 1e-3
    say(f"infra validation of a good candidate: {result['seconds']}")
    assert published["created"] == [result["container"]]  # one throwaway container, seen in the engine's events
    _assert_nothing_left(site, docker_api)


def test_a_rerun_of_a_candidate_that_passed_starts_no_container(
    site: Site, published: dict, serving_image: str, docker_base_url: str, docker_api
) -> None:
    record = _record_bytes(site, "good")
    releases = (site.serving_dir / "releases.jsonl").read_bytes()
    since = time.time()
    run = _run(site, "good", serving_image, docker_base_url)
    took = time.time() - since
    assert run.state == "success" and run.run_id != published["run"].run_id
    assert _states(run) == {"infra_validate": "success", "publish_model": "success"}
    assert _created(docker_api, since, time.time()) == []
    handed_on = _xcom(run, "infra_validate")
    assert handed_on["reused"] is True and handed_on["passed"] is True
    assert handed_on["run_id"] == published["run"].run_id  # the run whose container proved it
    name = site.candidates["good"].rsplit("/")[-1]
    assert handed_on["record"].endswith(f"/models/mnist/infra_validation/{name}.json")
    assert _record_bytes(site, "good") == record  # not rewritten
    # publish_model ran again: the same digest is already there, so nothing changed on the host.
    assert (site.serving_dir / "releases.jsonl").read_bytes() == releases
    assert tree(site.serving_dir) == published["tree"]
    say(f"infra validation rerun on a recorded pass: the whole run took {took:.1f}s")
    _assert_nothing_left(site, docker_api)


def test_a_gate_that_says_no_skips_infra_validation_and_starts_no_container(
    site: Site, published: dict, serving_image: str, docker_base_url: str, docker_api
) -> None:
    record = _record_bytes(site, "logits")
    since = time.time()
    run = _run(site, "logits", serving_image, docker_base_url, gate=False)
    assert run.state == "success"
    assert _states(run) == {"evaluate": "success", "infra_validate": "skipped", "publish_model": "skipped"}
    assert _created(docker_api, since, time.time()) == []
    assert _record_bytes(site, "logits") == record
    assert tree(site.serving_dir) == published["tree"]
    _assert_nothing_left(site, docker_api)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_candidate_is_stopped_with_the_reason_and_no_host_is_touched(
    site: Site, published: dict, kind: str, serving_image: str, docker_base_url: str, docker_api, webhook
) -> None:
    log_before = (site.serving_dir / "releases.jsonl").read_bytes()
    run = _run(site, kind, serving_image, docker_base_url)
    assert run.state == "failed"
    assert _states(run) == {"infra_validate": "failed", "publish_model": "upstream_failed"}
    # The host's serving dir and its release log are exactly as the good run left them.
    assert tree(site.serving_dir) == published["tree"]
    assert (site.serving_dir / "releases.jsonl").read_bytes() == log_before
    assert [line["version"] for line in release_lines(site.serving_dir)] == [VERSION]
    result = _result(site, kind)
    check = STOPPED_BY[kind]
    assert result["passed"] is False and result["failed_checks"][0] == check, result["checks"]
    assert result["reason"].startswith(f"{check} failed: ")
    if kind == "no_variables":
        assert "variables" in result["reason"] and result["log_tail"]
    if kind == "wrong_signature":
        assert "pixels" in result["reason"]
    [alert] = webhook.wait_for(1)
    text = alert["text"] + json.dumps(alert["blocks"])
    assert "candidate failed infra validation, nothing published" in text
    assert f"failed check {','.join(result['failed_checks'])}" in alert["text"]
    assert site.candidates[kind] in text and "2026-11-04" in text and f"{check} failed" in text
    say(f"infra validation of {kind}: {result['reason'][:120]} ({result['seconds']})")
    _assert_nothing_left(site, docker_api)
