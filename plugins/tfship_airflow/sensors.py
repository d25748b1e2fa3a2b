"""Sensors over the project's storage root (file:// or hdfs://)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

from tfship.config import StorageConfig


class PartitionReadySensor(BaseSensorOperator):
    """Wait until the raw partition of day `day` carries its `_SUCCESS` marker.

    :param day: D, `YYYY-MM-DD`. Templated.
    :param dataset: the dataset name (`raw/<dataset>/dt=D`). Templated.
    :param storage: the storage root the raw data lands on.
    :param raw_root: the directory under the storage root that holds `<dataset>/dt=D`. Templated.
    """

    template_fields: Sequence[str] = ("day", "dataset", "raw_root")

    def __init__(self, *, day: str, dataset: str, storage: StorageConfig, raw_root: str = "raw", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.day = day
        self.dataset = dataset
        self.storage = storage
        self.raw_root = raw_root

    def _marker(self) -> tuple[Any, str]:
        from tfship.days import parse_day
        from tfship.paths import raw_success

        return self.storage.open(), raw_success(self.dataset, parse_day(self.day), self.raw_root)

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
