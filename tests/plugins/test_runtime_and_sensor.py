from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from tfship.data.sampledata import write_day
from tfship.errors import ConfigError


def test_run_day_reads_param_then_interval():
    from tfship_airflow.runtime import run_day

    start = pendulum.datetime(2026, 3, 4, tz="UTC")
    assert run_day({"params": {"day": "2026-03-01"}, "data_interval_start": start}) == dt.date(2026, 3, 1)
    assert run_day({"params": {"day": None}, "data_interval_start": start}) == dt.date(2026, 3, 4)
    with pytest.raises(ConfigError, match="neither"):
        run_day({"params": {}})


def test_sensor_pokes_the_success_marker_of_the_day(local_storage):
    from tfship.config import StorageConfig
    from tfship_airflow.sensors import PartitionReadySensor

    storage = StorageConfig(local_storage.root_uri)
    sensor = PartitionReadySensor(task_id="wait_for_raw", day="2026-02-03", dataset="mnist", storage=storage)
    assert sensor.poke({}) is False
    write_day(local_storage, dt.date(2026, 2, 3), rows=20, shards=1)
    assert sensor.poke({}) is True
    write_day(local_storage, dt.date(2026, 2, 3), rows=20, shards=1)
    local_storage.delete("raw/mnist/dt=2026-02-03/_SUCCESS")
    assert sensor.poke({}) is False
