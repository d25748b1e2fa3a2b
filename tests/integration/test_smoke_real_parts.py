"""Smoke tests of the real parts: HDFS over WebHDFS, Spark through Airflow, Docker through Airflow."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pytest

from tfship.data.sampledata import write_day

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SMOKE_JOB = str(PROJECT_ROOT / "include" / "jobs" / "spark_smoke.py")


@pytest.fixture
def spark_local2(monkeypatch):
    """spark_default pointed at local[2], as the harness promises."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_DEFAULT",
        json.dumps({"conn_type": "spark", "host": "local[2]", "extra": {"deploy-mode": "client"}}),
    )


def _submit(input_uri: str, output: Path) -> dict:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    spark_smoke = SparkSubmitOperator(
        task_id="spark_smoke",
        application=SMOKE_JOB,
        application_args=[input_uri, str(output)],
        conn_id="spark_default",
        conf={"spark.ui.enabled": "false"},
    )
    spark_smoke.execute(context={})
    return json.loads(output.read_text())


@pytest.mark.hdfs
def test_hdfs_client_writes_and_reads(hdfs_cluster):
    from hdfs import InsecureClient

    client = InsecureClient(hdfs_cluster.webhdfs_url, user="root")
    client.write("/smoke/hello.txt", data=b"hello hdfs\n", overwrite=True)
    with client.read("/smoke/hello.txt") as reader:
        assert reader.read() == b"hello hdfs\n"
    assert client.status("/smoke/hello.txt")["length"] == 11


@pytest.mark.spark
def test_spark_submit_operator_runs_a_job_through_spark_default(spark_submit, spark_local2, tmp_path):
    source = tmp_path / "lines.txt"
    source.write_text("".join(f"line {i}\n" for i in range(37)))
    result = _submit(f"file://{source}", tmp_path / "out.json")
    assert result["lines"] == 37
    assert result["master"] == "local[2]"


@pytest.mark.hdfs
@pytest.mark.spark
def test_spark_reads_what_webhdfs_wrote_through_hdfs_uri(spark_submit, spark_local2, hdfs_storage, tmp_path):
    summary = write_day(hdfs_storage, dt.date(2026, 11, 25), rows=90, shards=2, bad_fraction=0.0)
    assert hdfs_storage.list("raw/mnist/dt=2026-11-25")[0] == "_SUCCESS"
    with hdfs_storage.open_read("raw/mnist/dt=2026-11-25/part-00000.jsonl.gz") as handle:
        assert len(gzip.decompress(handle.read()).splitlines()) == 45
    result = _submit(f"{summary.uri}/part-*.jsonl.gz", tmp_path / "out.json")
    assert result["input"].startswith("hdfs://")
    assert result["lines"] == 90


@pytest.mark.docker
def test_docker_operator_runs_a_container(docker_base_url):
    from airflow.providers.docker.operators.docker import DockerOperator

    from harness.docker_engine import ensure_busybox_image

    image = ensure_busybox_image(docker_base_url)
    docker_smoke = DockerOperator(
        task_id="docker_smoke",
        image=image,
        command=["sh", "-c", "echo started; echo $((6 * 7))"],
        docker_url=docker_base_url,
        network_mode="host",
        auto_remove="force",
        mount_tmp_dir=False,
        retrieve_output=False,
    )
    assert docker_smoke.execute(context={}) == "42"
