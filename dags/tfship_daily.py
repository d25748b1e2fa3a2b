"""Daily retraining: the day's raw partition -> features -> model -> verified TF Serving release."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task

from tfship.config import Settings
from tfship_airflow.sensors import PartitionReadySensor

SETTINGS = Settings.from_env()

DOC = """
### tfship_daily
One run per day D (the data interval [D, D+1) in UTC, fired after D ends). A manual run
names its day with the `day` Param. Every task writes to places derived from D and content
digests only, so clearing any task and rerunning it is safe. See the README's runbook.
"""

with DAG(
    dag_id="tfship_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=1), "retry_exponential_backoff": 2.0},
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day D",
            description="The partition day (YYYY-MM-DD) for a manual run; scheduled runs use their data interval.",
        ),
    },
    doc_md=DOC,
    tags=["tfship", "training", "serving"],
) as dag:

    @task(retries=0)
    def resolve_day(**context) -> str:
        """Fix D for the whole run, or fail at once when the run cannot say which day it is."""
        from tfship_airflow.runtime import run_day

        return run_day(context).isoformat()

    day = resolve_day()

    wait_for_raw = PartitionReadySensor(
        task_id="wait_for_raw",
        day="{{ ti.xcom_pull(task_ids='resolve_day') }}",
        mode="reschedule",
        poke_interval=SETTINGS.raw_poke_interval_s,
        timeout=SETTINGS.raw_wait_timeout_s,
        retries=0,
    )

    day >> wait_for_raw
