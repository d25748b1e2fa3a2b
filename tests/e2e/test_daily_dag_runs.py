"""`airflow dags test` of the daily DAG against generated partitions on file://."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest

from tfship.sampledata import write_day
from tfship.storage import LocalStorage

pytestmark = pytest.mark.airflow


def _dags_test(storage_root: str, conf: dict, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, TFSHIP_STORAGE_ROOT=storage_root, **(extra_env or {}))
    return subprocess.run(
        ["airflow", "dags", "test", "tfship_daily", "-c", json.dumps(conf)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def test_run_for_a_day_with_data_succeeds(tmp_path: Path):
    storage = LocalStorage(f"file://{tmp_path}")
    write_day(storage, dt.date(2026, 11, 20), rows=60, shards=1)
    done = _dags_test(storage.root_uri, {"day": "2026-11-20"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"{tmp_path}/raw/mnist/dt=2026-11-20/_SUCCESS is there" in output
    assert "state=success" in output


def test_missing_partition_times_out_naming_the_path(tmp_path: Path):
    done = _dags_test(
        f"file://{tmp_path}",
        {"day": "2026-10-01"},
        {"TFSHIP_RAW_WAIT_TIMEOUT_S": "3", "TFSHIP_RAW_POKE_INTERVAL_S": "1"},
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"file://{tmp_path}/raw/mnist/dt=2026-10-01/_SUCCESS did not appear within 3s" in output


def test_a_day_param_that_is_not_a_date_is_refused(tmp_path: Path):
    done = _dags_test(f"file://{tmp_path}", {"day": "yesterday"})
    assert done.returncode != 0
    assert "yesterday" in done.stdout + done.stderr
