"""docker-compose.yaml is valid for the compose tool and wires the parts the README promises."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_is_valid_and_complete():
    command = _compose_command()
    if command is None:
        pytest.skip("no compose tool installed (scripts/setup installs docker-compose)")
    done = subprocess.run(
        [*command, "-f", str(PROJECT_ROOT / "docker-compose.yaml"), "config", "--services"],
        capture_output=True, text=True, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    services = set(done.stdout.split())
    assert {
        "postgres", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
        "airflow-triggerer", "namenode", "datanode", "tfserving",
    } <= services  # fmt: skip
