"""Queue routing of the per-host serving tasks, through Airflow's own cluster-policy hook."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def routed(dag_id: str, task_id: str, map_index: int) -> str:
    from airflow import settings

    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, map_index=map_index, queue="default")
    settings.task_instance_mutation_hook(ti)  # the hook Airflow loaded from airflow_local_settings
    return ti.queue


@pytest.mark.parametrize(
    ("task_id", "map_index", "queue"),
    [
        ("publish_model", 0, "serving-1"),
        ("publish_model", 1, "serving-2"),
        ("release_host", 1, "serving-2"),
        ("release_host", 2, "serving-edge"),
        ("train", -1, "default"),
        ("cross_validate", 1, "default"),
    ],
)
def test_copy_i_of_a_per_host_task_runs_on_host_is_queue(monkeypatch, task_id, map_index, queue):
    monkeypatch.setenv("TFSHIP_SERVING_DIR", "serving-1=/srv/a;serving-2=/srv/b;edge=/srv/c")
    assert routed("tfship_daily", task_id, map_index) == queue


def test_other_dags_and_unmapped_copies_keep_their_queue(monkeypatch):
    monkeypatch.setenv("TFSHIP_SERVING_DIR", "a=/srv/a")
    assert routed("someone_elses_dag", "publish_model", 0) == "default"
    assert routed("tfship_daily", "publish_model", -1) == "default"
    assert routed("tfship_daily", "publish_model", 5) == "default"  # no such host: left alone
