"""The Spark provider's submit hook, also keeping the lines of spark-submit's output that explain an end."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

# What YARN or Spark says when it refuses a job or cannot place it (texts of Spark 4 / Hadoop 3.5).
REFUSALS = (
    "is above the max threshold",  # spark-submit: more memory than yarn.scheduler.maximum-allocation-mb
    "InvalidResourceRequestException",  # the ResourceManager: more vcores (or GPUs) than a container may have
)
NOT_ENOUGH_SLOTS = "Barrier stage in job"  # "... requires N slots, but only M are available."


class MarkedLinesSparkSubmitHook(SparkSubmitHook):
    """SparkSubmitHook that also remembers marked lines of spark-submit's output.

    `marks`: line prefixes our jobs print (the last line of each is kept, without the prefix);
    `reasons`: texts of Spark's or YARN's refusals (the last line holding each is kept whole).
    A job's verdict then reaches the task's exception, not only somewhere in a long log. In
    cluster deploy mode the driver's own output stays in YARN's logs.
    """

    def __init__(self, *, marks: Sequence[str] = (), reasons: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marks, self.reasons = tuple(marks), tuple(reasons)
        self.marked: dict[str, str] = {}
        self.explained: dict[str, str] = {}

    # The provider reads spark-submit's output in this one method; we look at each line on the way.
    def _process_spark_submit_log(self, itr: Iterator[Any]) -> None:
        def watched() -> Iterator[Any]:
            for line in itr:
                for mark in self.marks:
                    if line.startswith(mark):
                        self.marked[mark] = line.removeprefix(mark).strip()
                for reason in self.reasons:
                    if reason in line:
                        self.explained[reason] = line.strip()
                yield line

        super()._process_spark_submit_log(watched())
