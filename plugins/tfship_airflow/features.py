"""The features partition as Airflow sees it: validation that fails fast on bad data."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from tfship.config import Settings
from tfship.days import parse_day
from tfship.preprocess import PreprocessError, check_stats, read_stats
from tfship.storage import storage_from_settings


def validate_day_features(day: str, *, max_quarantine_share: float) -> tuple[dict, dict]:
    """The day's `_stats.json` and its checked summary; bad data fails without retries."""
    settings = Settings.from_env()
    try:
        stats = read_stats(storage_from_settings(settings), settings.dataset, parse_day(day))
        return stats, check_stats(stats, max_quarantine_share=max_quarantine_share)
    except PreprocessError as err:
        raise AirflowFailException(str(err)) from err  # retrying cannot fix the data
