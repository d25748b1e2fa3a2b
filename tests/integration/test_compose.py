"""docker-compose.yaml as the compose tool reads it: the services the stack promises, wired safely."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def compose_config() -> dict:
    done = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "compose"), "-f", "docker-compose.yaml", "config", "--format", "json"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_compose_config_declares_the_whole_stack_and_hands_the_engine_no_container_paths():
    config = compose_config()
    services = config["services"]
    assert set(services) == {
        "postgres", "redis", "namenode", "datanode", "httpfs-1", "httpfs-2", "airflow-init", "airflow-apiserver",
        "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "worker", "serving-1", "serving-2", "nginx",
    }  # fmt: skip
    # TF Serving containers belong to release_host (tfserving-<model>-<host>): compose declares none.
    names = {s.get("container_name", "") for s in services.values()}
    assert not [n for n in names if n.startswith("tfserving")], names
    for name, service in services.items():
        for volume in service.get("volumes", []):
            # Named volumes only, besides the engine's own socket for the workers that start containers.
            assert volume["type"] == "volume" or volume["source"] == "/var/run/docker.sock", (name, volume)
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)  # published on loopback only
    # Each serving host: its own disk, its own queue.
    for host in ("serving-1", "serving-2"):
        service = services[host]
        assert service["command"][-2:] == ["--queues", host]
        models = [v for v in service["volumes"] if v["target"] == "/srv/tfserving/mnist"]
        assert [v["source"] for v in models] == [f"{host}-models"]
    assert services["worker"]["command"][-2:] == ["--queues", "default"]
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["TFSHIP_WEBHDFS_ENDPOINTS"] == "http://httpfs-1:14000;http://httpfs-2:14000"
    assert env["TFSHIP_STORAGE_ROOT"].startswith("hdfs://namenode:8020/")
