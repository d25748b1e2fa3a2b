"""The operator in real Airflow runs (`dag.test()`): candidate on HDFS -> versions on two serving hosts."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from harness.fake_candidate import data_file, write_fake_candidate
from tests.airflow_support import register_dag
from tests.publish.helpers import numeric_children, release_lines, source_tree, tree

pytestmark = [pytest.mark.hdfs, pytest.mark.airflow]

DAY = dt.date(2026, 5, 6)


def _dag(dag_id: str, candidate: str, hosts: dict[str, str], hdfs_storage, hdfs_cluster, retries: int):
    from airflow.sdk import DAG

    from tfship.config import StorageConfig
    from tfship_airflow.publish import PublishModelOperator

    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"day": DAY.isoformat(), "keep": 3},
        render_template_as_native_obj=True,
    ) as dag:
        PublishModelOperator.partial(
            task_id="publish_model",
            candidate=candidate,
            day="{{ params.day }}",
            keep="{{ params.keep }}",
            storage=StorageConfig(hdfs_storage.root_uri, (hdfs_cluster.webhdfs_url,), "root"),
            backoff_s=0.05,
            retries=retries,
            map_index_template="{{ task.host }}",
        ).expand_kwargs([{"host": host, "serving_dir": target} for host, target in hosts.items()])
    register_dag(dag)
    return dag


def test_dag_run_publishes_to_every_serving_host(hdfs_storage, hdfs_cluster, tmp_path):
    candidate, _ = write_fake_candidate(hdfs_storage, model="mnist", day=DAY, total_bytes=500_000, seed=31)
    hosts = {"serve-a": str(tmp_path / "a" / "mnist"), "serve-b": str(tmp_path / "b" / "mnist")}
    run = _dag("tfship_publish_test", candidate, hosts, hdfs_storage, hdfs_cluster, retries=0).test()
    assert run.state == "success"
    expected = source_tree(hdfs_storage, candidate)
    for host, target in hosts.items():
        serving_dir = tmp_path / target
        assert numeric_children(serving_dir) == ["2026050600"], host
        assert tree(serving_dir / "2026050600") == expected
        [line] = release_lines(serving_dir)
        assert (line["version"], line["host"], line["run_id"]) == (2026050600, host, run.run_id)


def test_dag_run_with_a_corrupt_candidate_fails_and_alerts(hdfs_storage, hdfs_cluster, tmp_path, webhook):
    candidate, _ = write_fake_candidate(hdfs_storage, model="mnist", day=DAY, total_bytes=200_000, seed=32)
    victim = f"{candidate}/saved_model.pb"
    with hdfs_storage.open_read(victim) as handle:
        data = bytearray(handle.read())
    data[7] ^= 0x40
    with hdfs_storage.open_write(victim) as handle:
        handle.write(bytes(data))
    target = tmp_path / "a" / "mnist"
    run = _dag("tfship_publish_fail_test", candidate, {"serve-a": str(target)}, hdfs_storage, hdfs_cluster, 1).test()
    assert run.state == "failed"
    assert numeric_children(target) == []
    [body] = webhook.wait_for(1)
    for expected in ("mnist", "2026-05-06", "serve-a", "saved_model.pb", "md5", "publish_model"):
        assert expected in body["text"] + str(body["blocks"])
    assert data_file() not in body["text"]
