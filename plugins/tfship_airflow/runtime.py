"""What a task needs from its Airflow context, turned into library values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfship.config import Settings
from tfship.days import resolve_day


def run_day(context: Mapping[str, Any]) -> dt.date:
    """D for this run: the `day` Param if given, else the run's data interval start."""
    params = context.get("params") or {}
    return resolve_day(params.get("day"), context.get("data_interval_start"))


@dataclass(frozen=True)
class RunInputs:
    """What resolve_day fixes for the whole run: D and the raw root it reads."""

    day: dt.date
    raw_root: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready; the DAG hands each key on (`multiple_outputs`)."""
        return {"day": self.day.isoformat(), "raw_root": self.raw_root}


def check_run_inputs(settings: Settings, context: Mapping[str, Any]) -> RunInputs:
    """D and the raw root, after refusing Params no work should start with; a manual day must have raw data.

    A scheduled run waits for its partition (the sensor); a run that names its day was asked for
    by a person, so a day with no data is a typo or a wrong environment, said at once.
    """
    from tfship.paths import check_raw_root, raw_dir

    params = context.get("params") or {}
    day = run_day(context)
    raw_root = check_raw_root(params.get("raw_root") or "raw")
    if params.get("day"):
        storage = settings.storage.open()
        partition = raw_dir(settings.dataset, day, raw_root)
        if not storage.is_dir(partition):
            raise FileNotFoundError(
                f"day {day.isoformat()} has no raw data: {storage.uri(partition)} does not exist "
                "(a manual run must name a day whose partition has landed)"
            )
    return RunInputs(day, raw_root)
