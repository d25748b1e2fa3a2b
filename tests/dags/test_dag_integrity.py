"""Every DAG file parses cleanly, cheaply, and is wired as DESIGN.md says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
HEAVY = ("tensorflow", "pyspark", "hdfs", "docker", "sklearn", "keras")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG found"


def test_dag_ids_equal_file_names(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


def test_daily_dag_is_interval_based_utc_with_retries_docs_and_tags(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["tfship_daily"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert str(dag.start_date.tzinfo) in ("UTC", "+00:00")
    assert dag.doc_md and dag.tags
    assert dag.default_args["retries"] >= 1
    assert dag.params["day"] is None
    assert dag.params.get_param("day").schema["format"] == "date"


def test_daily_dag_graph(dagbag):
    dag = dagbag.dags["tfship_daily"]
    upstream = {task_id: dag.get_task(task_id).upstream_task_ids for task_id in dag.task_ids}
    assert upstream == {
        "resolve_day": set(),
        "wait_for_raw": {"resolve_day"},
        "package_library": set(),
        "preprocess": {"wait_for_raw", "package_library", "resolve_day"},
        "validate_features": {"preprocess", "resolve_day"},
        "check_drift": {"validate_features", "resolve_day"},
        "cv_grid": set(),
        "cross_validate": {"cv_grid", "resolve_day", "check_drift"},
        "choose_config": {"cross_validate"},
        "train": {"choose_config", "resolve_day"},
        "evaluate": {"train", "resolve_day", "check_drift"},
        "infra_validate": {"evaluate", "train", "resolve_day"},
        "publish_model": {"infra_validate", "train", "resolve_day"},
        "release_host": {"publish_model"},
        "report_release": {
            "release_host",
            "publish_model",
            "infra_validate",
            "evaluate",
            "train",
            "check_drift",
            "resolve_day",
        },
    }
    # The report runs after anything upstream and leaves the run's state to the real work.
    report = dag.get_task("report_release")
    assert report.is_teardown and report.trigger_rule == "all_done_setup_success"
    assert dag.get_task("resolve_day").is_setup
    assert dag.default_args["on_failure_callback"].__name__ == "alert_on_failure"
    sensor = dag.get_task("wait_for_raw")
    assert sensor.mode == "reschedule" and sensor.timeout > 0
    # Nothing reaches a host unless infra validation passed: publication waits for all of its upstream.
    assert dag.get_task("publish_model").trigger_rule == "all_success"
    assert dag.get_task("infra_validate").trigger_rule == "all_success"
    # A "no" from the gate skips infra validation (its direct downstream), so a held run starts no container.
    gate = dag.get_task("evaluate")
    assert gate.downstream_task_ids == {"infra_validate", "report_release"}
    assert type(gate).__name__ == "_ShortCircuitDecoratedOperator" and gate.ignore_downstream_trigger_rules is False


def test_preprocess_is_a_spark_submit_on_spark_default_with_the_run_day(dagbag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    preprocess = dagbag.dags["tfship_daily"].get_task("preprocess")
    assert isinstance(preprocess, SparkSubmitOperator)
    assert preprocess._conn_id == "spark_default"
    assert preprocess.application.endswith("include/jobs/preprocess.py")
    args = preprocess.application_args
    day = args[args.index("--day") + 1]
    assert isinstance(day, PlainXComArg) and (day.operator.task_id, day.key) == ("resolve_day", "day")
    assert "--eval-share={{ params.eval_share }}" in args


def test_cross_validation_is_mapped_and_publication_is_mapped_per_host(dagbag):
    dag = dagbag.dags["tfship_daily"]
    assert dag.get_task("cross_validate").is_mapped
    assert dag.get_task("publish_model").is_mapped
    # Host h's release is expanded from what host h's publication returned, one batch of hosts at a time.
    release = dag.get_task("release_host")
    assert release.is_mapped and release.max_active_tis_per_dagrun == 1


def test_xcom_edges_are_data_not_template_strings(dagbag):
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            for field in task.template_fields:
                value = getattr(task, field, None)
                strings = value if isinstance(value, list | tuple) else [value]
                for text in (item for item in strings if isinstance(item, str)):
                    assert "xcom_pull" not in text, (dag.dag_id, task.task_id, field)


def test_every_manual_knob_is_a_param_with_a_schema(dagbag):
    params = dagbag.dags["tfship_daily"].params
    for name in ("day", "eval_share", "cv_folds", "cv_grid", "epochs", "replicas", "force_publish", "keep_versions"):
        assert params.get_param(name).schema.get("type"), name
    for name in ("drift_window_days", "drift_max_js", "drift_max_label_linf", "drift_action", "infra_timeout_s"):
        assert params.get_param(name).schema.get("type"), name
    assert params.get_param("drift_action").schema["enum"] == ["hold", "fail"]
    assert params.get_param("force_publish").schema["type"] == "boolean"


def test_validate_features_declares_the_features_asset(dagbag):
    validate = dagbag.dags["tfship_daily"].get_task("validate_features")
    [features] = validate.outlets
    assert features.uri.endswith("/features/mnist") and features.name == features.uri


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS_DIR.glob("*.py")))
def test_dag_files_import_nothing_heavy(dag_file):
    probe = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]); "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(DAGS_DIR / dag_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
