"""`make run`: generate a sample day, run the daily DAG end to end with `airflow dags test`, summarise.

Usage: python scripts/run_daily.py [--day YYYY-MM-DD] [--rows N]
Defaults: D = yesterday (UTC), 10k rows, the storage root from config (local files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from tfship.config import Settings
from tfship.days import parse_day
from tfship.paths import raw_dir
from tfship.sampledata import write_day
from tfship.storage import storage_from_settings

DAG_ID = "tfship_daily"


def _airflow_json(*args: str) -> list[dict]:
    done = subprocess.run(["airflow", *args, "-o", "json"], capture_output=True, text=True, check=True)
    start = done.stdout.find("[")
    return json.loads(done.stdout[start:]) if start >= 0 else []


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline for one day and print what it did."""
    parser = argparse.ArgumentParser(description=__doc__)
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date()
    parser.add_argument("--day", type=parse_day, default=yesterday)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    storage = storage_from_settings(settings)
    print(f"[run] generating raw partition {storage.uri(raw_dir(settings.dataset, args.day))}", flush=True)
    summary = write_day(storage, args.day, dataset=settings.dataset, rows=args.rows)

    log_dir = Path(os.environ["AIRFLOW_HOME"]) / "run-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{DAG_ID}-{args.day.isoformat()}.log"
    print(f"[run] airflow dags test {DAG_ID} (day {args.day}); log: {log_path}", flush=True)
    with open(log_path, "w") as log:
        done = subprocess.run(
            ["airflow", "dags", "test", DAG_ID, "-c", json.dumps({"day": args.day.isoformat()})],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    runs = _airflow_json("dags", "list-runs", DAG_ID)
    run = max(runs, key=lambda r: r.get("run_after") or "") if runs else {}
    states = _airflow_json("tasks", "states-for-dag-run", DAG_ID, run["run_id"]) if run else []

    print("\n=== tfship daily run ===")
    print(f"partition      {summary.uri}")
    print(f"rows           {summary.rows} generated, {summary.valid_rows} valid, malformed {summary.malformed}")
    print(f"dag run        {run.get('run_id', '?')}: {run.get('state', 'unknown')}")
    for task in states:
        print(f"  {task.get('task_id', '?'):<24} {task.get('state')}")
    print(f"storage root   {settings.storage_root}")
    print(f"airflow log    {log_path}")
    print("Later stages (preprocess, train, publish, deploy, canary) are not built yet.")
    return 0 if done.returncode == 0 else done.returncode


if __name__ == "__main__":
    sys.exit(main())
