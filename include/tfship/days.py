"""The day D a run is for: from the `day` Param first, then the data interval."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tfship.errors import ConfigError


def parse_day(value: str) -> dt.date:
    """Parse a YYYY-MM-DD string, with an error that names the bad value."""
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ConfigError(f"day {value!r} is not a date in YYYY-MM-DD form") from None


def resolve_day(param_day: str | None, data_interval_start: Any | None) -> dt.date:
    """Pick D: an explicit `day` Param wins, else the start of the run's data interval.

    Runs triggered without a logical date (REST, CLI, assets) have no data interval in
    Airflow 3, so without a `day` Param there is no way to know which partition to read.
    """
    if param_day:
        return parse_day(str(param_day))
    if data_interval_start is not None:
        if isinstance(data_interval_start, dt.datetime):
            return data_interval_start.astimezone(dt.UTC).date()
        if isinstance(data_interval_start, dt.date):
            return data_interval_start
        return parse_day(str(data_interval_start)[:10])
    raise ConfigError(
        "this run has neither a 'day' Param nor a data interval: trigger it with "
        'conf {"day": "YYYY-MM-DD"} or let the schedule create it'
    )


def day_number(day: dt.date) -> int:
    """YYYYMMDD as an int, the base of TF Serving version numbers."""
    return day.year * 10000 + day.month * 100 + day.day
