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
