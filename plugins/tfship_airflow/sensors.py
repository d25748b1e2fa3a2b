"""Sensors over the project's storage root (file:// or hdfs://)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout


class PartitionReadySensor(BaseSensorOperator):
    """Wait until the raw partition of day `day` carries its `_SUCCESS` marker."""

    template_fields = ("day", "raw_root")

    def __init__(self, *, day: str, dataset: str | None = None, raw_root: str = "raw", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.day = day
        self.dataset = dataset
        self.raw_root = raw_root

    def _marker(self) -> tuple[Any, str]:
        from tfship.config import Settings
        from tfship.days import parse_day
        from tfship.paths import raw_success
        from tfship.storage import storage_from_settings

        settings = Settings.from_env()
        storage = storage_from_settings(settings)
        return storage, raw_success(self.dataset or settings.dataset, parse_day(self.day), self.raw_root)

    def poke(self, context: Any) -> bool:
        storage, marker = self._marker()
        ready = storage.exists(marker)
        self.log.info("%s %s", storage.uri(marker), "is there" if ready else "is not there yet")
        return ready

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            storage, marker = self._marker()
            raise AirflowSensorTimeout(
                f"raw partition not ready: {storage.uri(marker)} did not appear within {self.timeout:.0f}s"
            ) from err
