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
from tfship.data.sampledata import write_day
from tfship.data.stats import read_stats
from tfship.days import parse_day
from tfship.errors import TfshipError
from tfship.paths import features_dir, quarantine_dir, raw_dir, release_record_path

DAG_ID = "tfship_daily"


def _latest_run() -> tuple[str, str, dict[str, str], dict[tuple[str, str], object]]:
    """Run id, state, task states and XComs of the newest run, read from the metadata DB."""
    from airflow.models import DagRun, TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == DAG_ID).order_by(DagRun.id.desc()).first()
        if run is None:
            return "?", "not created", {}, {}
        tasks = session.query(TaskInstance).filter(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run.run_id)
        states = {}
        for ti in tasks.order_by(TaskInstance.start_date):
            name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            states[name] = str(ti.state)
        xcoms = session.query(XComModel).filter(XComModel.dag_id == DAG_ID, XComModel.run_id == run.run_id)
        values = {(x.task_id, x.key): x.value for x in xcoms if x.map_index <= 0}
        return run.run_id, str(run.state), states, values


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline for one day and print what it did."""
    parser = argparse.ArgumentParser(description=__doc__)
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date()
    parser.add_argument("--day", type=parse_day, default=yesterday)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    storage = settings.storage.open()
    print(f"[run] generating raw partition {storage.uri(raw_dir(settings.dataset, args.day))}", flush=True)
    summary = write_day(storage, args.day, dataset=settings.dataset, rows=args.rows)

    log_dir = Path(os.environ["AIRFLOW_HOME"]) / "run-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{DAG_ID}-{args.day.isoformat()}.log"
    print(f"[run] airflow dags test {DAG_ID} (day {args.day}); log: {log_path}", flush=True)
    with open(log_path, "w") as log:
        command = ["airflow", "dags", "test", DAG_ID, "-c", json.dumps({"day": args.day.isoformat()})]
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    run_id, run_state, task_states, xcoms = _latest_run()

    print("\n=== tfship daily run ===")
    print(f"partition      {summary.uri}")
    print(f"rows           {summary.rows} generated, {summary.valid_rows} valid, malformed {summary.malformed}")
    print(f"dag run        {run_id}: {run_state}")
    for task_id, state in task_states.items():
        print(f"  {task_id:<24} {state}")
    features = features_dir(settings.dataset, args.day)
    try:
        stats = read_stats(storage, settings.dataset, args.day)
        print(f"features       {storage.uri(features)}")
        print(
            f"               {stats['rows_read']} read, written {stats['rows_written']}, "
            f"quarantined {stats['quarantined_total']} {stats['quarantined']}"
        )
        print(f"quarantine     {storage.uri(quarantine_dir(settings.dataset, args.day))}")
    except TfshipError as err:
        print(f"features       not written: {err}")
    trained = xcoms.get(("train", "return_value")) or {}
    choice = xcoms.get(("choose_config", "return_value")) or {}
    decision = xcoms.get(("evaluate", "decision")) or {}
    published = xcoms.get(("publish_model", "return_value")) or {}
    version = published.get("version")
    if choice:
        print(f"cv best        {choice.get('config_id')}  (report {choice.get('report_dir')})")
    if trained:
        print(f"candidate      {trained.get('candidate_uri')}")
        print(f"accuracy       {trained.get('eval_accuracy')} on the eval split (loss {trained.get('eval_loss')})")
    drift = xcoms.get(("check_drift", "return_value")) or {}
    infra = xcoms.get(("infra_validate", "return_value")) or {}
    if drift:
        verdict = f"{str(drift.get('status')).upper()} (action {drift.get('action')})"
        print(f"drift check    {verdict}: {drift.get('summary')}")
    else:
        print("drift check    did not run")
    if decision:
        print(f"gate           {'PUBLISH' if decision.get('publish') else 'HOLD'}: {decision.get('reason')}")
    if infra:
        seconds = infra.get("seconds") or {}
        where = (
            f"recorded by run {infra.get('run_id')}, no container started"
            if infra.get("reused")
            else f"throwaway container {infra.get('container')}, {seconds.get('total')} s"
        )
        print(f"infra valid.   {'PASSED' if infra.get('passed') else 'FAILED'}: {infra.get('reason')} ({where})")
    else:
        print("infra valid.   did not run (the gate held the candidate, or an earlier task failed)")
    hosts = ", ".join(host.serving_dir for host in settings.serving_hosts)
    print(f"model version  {version if version is not None else 'not published'} -> {hosts}")
    released = xcoms.get(("release_host", "return_value")) or xcoms.get(("release_host", "host_release")) or {}
    deployed = released.get("deploy") or {}
    canary = released.get("canary") or {}
    if deployed:
        standin = " (TF-Serving-compatible STAND-IN: tensorflow/serving is not available here)"
        image = deployed.get("image", "")
        print(
            f"serving        {deployed.get('name')} {deployed.get('action')}, image {image}"
            f"{standin if 'standin' in image else ''}, REST {deployed.get('url')}"
        )
    if released:
        print(
            f"release        host {released.get('host')}: {released.get('step')}, labels {released.get('labels')}, "
            f"memory {released.get('memory')}"
        )
    if canary:
        latency = canary.get("latency_ms", {})
        verdict = "PASSED" if canary.get("passed") else f"FAILED {canary.get('failed_checks')} (rolled back)"
        print(
            f"canary         {verdict}: v{canary.get('version')} {canary.get('rows')} rows, "
            f"accuracy {canary.get('accuracy'):.4f}, argmax agreement {canary.get('argmax_agreement'):.4f}, "
            f"latency p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms"
        )
    print(f"storage root   {settings.storage_root}")
    report = xcoms.get(("report_release", "return_value")) or {}
    if report:
        record = release_record_path(settings.model, args.day.isoformat(), str(report.get("run_id", run_id)))
        print(f"release record {storage.uri(record)} ({report.get('status')})")
        print("release view   /tfship/releases on the api-server (`airflow standalone`, Browse -> Releases)")
    print(f"airflow log    {log_path}")
    if deployed:
        print(f"try it         curl {deployed.get('url')}/v1/models/{settings.model}")
    return 0 if done.returncode == 0 else done.returncode


if __name__ == "__main__":
    sys.exit(main())
