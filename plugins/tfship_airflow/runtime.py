"""What a task needs from its Airflow context, turned into library values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from tfship.days import resolve_day


def run_day(context: Mapping[str, Any]) -> dt.date:
    """D for this run: the `day` Param if given, else the run's data interval start."""
    params = context.get("params") or {}
    return resolve_day(params.get("day"), context.get("data_interval_start"))


def check_run_inputs(context: Mapping[str, Any]) -> dt.date:
    """D, after refusing Params no work should start with; a manual day must already have raw data.

    A scheduled run waits for its partition (the sensor); a run that names its day was asked for
    by a person, so a day with no data is a typo or a wrong environment, said at once.
    """
    from tfship.config import Settings
    from tfship.paths import check_raw_root, raw_dir
    from tfship.storage import storage_from_settings

    params = context.get("params") or {}
    day = run_day(context)
    raw_root = check_raw_root(params.get("raw_root") or "raw")
    if params.get("day"):
        settings = Settings.from_env()
        storage = storage_from_settings(settings)
        partition = raw_dir(settings.dataset, day, raw_root)
        if not storage.is_dir(partition):
            raise FileNotFoundError(
                f"day {day.isoformat()} has no raw data: {storage.uri(partition)} does not exist "
                "(a manual run must name a day whose partition has landed)"
            )
    return day
