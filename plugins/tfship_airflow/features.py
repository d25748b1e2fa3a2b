"""The features partition as Airflow sees it: validation that fails fast on bad data."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from tfship.config import Settings
from tfship.data.stats import check_stats, read_stats
from tfship.days import parse_day
from tfship.errors import PreprocessError


def validate_day_features(settings: Settings, day: str, *, max_quarantine_share: float) -> tuple[dict, dict]:
    """The day's `_stats.json` and its checked summary; bad data fails without retries."""
    try:
        stats = read_stats(settings.storage.open(), settings.dataset, parse_day(day))
        return stats, check_stats(stats, max_quarantine_share=max_quarantine_share)
    except PreprocessError as err:
        raise AirflowFailException(str(err)) from err  # retrying cannot fix the data
