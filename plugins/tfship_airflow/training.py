"""Airflow side of cross-validation, training and the evaluation gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from tfship.config import Settings
from tfship.days import parse_day
from tfship.errors import TfshipError
from tfship.paths import work_dir


def run_work_dir(context: Mapping[str, Any]) -> Path:
    """This run's local scratch directory (features cache, checkpoints): same run, same place."""
    settings = Settings.from_env()
    dag_run = context["dag_run"]
    return Path(settings.local_work_dir) / work_dir(dag_run.dag_id, dag_run.run_id).removeprefix("work/")


def _local_features(day: str, context: Mapping[str, Any]) -> Any:
    from tfship.features_io import stage_features
    from tfship.storage import storage_from_settings

    settings = Settings.from_env()
    local = run_work_dir(context) / "features"
    return stage_features(storage_from_settings(settings), settings.dataset, parse_day(day), local)


def cross_validate_config(hparams: dict, day: str, params: Mapping[str, Any], context: Mapping[str, Any]) -> dict:
    """One configuration's k-fold result (one mapped task)."""
    from tfship.cv import cross_validate
    from tfship.days import day_number
    from tfship.model import HParams

    try:
        features = _local_features(day, context)
        return cross_validate(
            features,
            HParams.from_dict(dict(hparams)),
            folds=int(params["cv_folds"]),
            subsample=float(params["cv_subsample"]),
            epochs=int(params["cv_epochs"]),
            seed=day_number(parse_day(day)),
        )
    except TfshipError as err:
        raise AirflowFailException(str(err)) from err


def choose_config(results: list[dict], context: Mapping[str, Any]) -> dict:
    """Write cv_results.json/png into the run's work dir and return the best configuration."""
    from tfship.cv import write_report

    directory = run_work_dir(context) / "cv"
    best = write_report(list(results), directory)
    return {"hparams": best["hparams"], "config_id": best["config_id"], "report_dir": str(directory)}


def run_training(choice: dict, day: str, params: Mapping[str, Any], context: Mapping[str, Any]) -> dict:
    """Run the training process (`python -m jobs.train`), streaming its output into the task log.

    A subprocess, so the process owns its TensorFlow runtime (logical CPU replicas must be set
    before TF starts) and a retry resumes from the per-epoch checkpoints in the work dir.
    """
    from jobs.train import BAD_INPUT_EXIT, ERROR_PREFIX, RESULT_PREFIX

    report = Path(choice["report_dir"])
    command = [
        sys.executable, "-m", "jobs.train",
        "--day", day,
        "--work-dir", str(run_work_dir(context) / "train"),
        "--hparams", json.dumps(choice["hparams"]),
        "--epochs", str(params["epochs"]),
        "--global-batch", str(params["global_batch"]),
        "--replicas", str(params["replicas"]),
        "--extra-file", str(report / "cv_results.json"),
        "--extra-file", str(report / "cv_results.png"),
    ]  # fmt: skip
    result: dict | None = None
    error = ""
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
    ) as process:
        for line in process.stdout:  # type: ignore[union-attr]
            line = line.rstrip("\n")
            print(line, flush=True)
            tail.append(line)
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line.removeprefix(RESULT_PREFIX))
            elif line.startswith(ERROR_PREFIX):
                error = line.removeprefix(ERROR_PREFIX)
    if process.returncode == BAD_INPUT_EXIT:
        raise AirflowFailException(error or "training refused its input")
    if process.returncode != 0 or result is None:
        raise AirflowException(f"training process exited with {process.returncode}: " + " | ".join(list(tail)[-5:]))
    return result


def evaluation_gate(candidate: dict, day: str, params: Mapping[str, Any], context: Mapping[str, Any]) -> dict:
    """Score the served model on the same eval split and decide whether the candidate may go out."""
    from tfship.days import parse_day
    from tfship.gate import GateDecision, decide, newer_day_served, served_version_dir
    from tfship.model import load_serving_fn
    from tfship.train import evaluate

    settings = Settings.from_env()
    served = served_version_dir(Path(next(iter(settings.serving_dirs.values()))))
    backfill = newer_day_served(parse_day(day), served[0] if served else None)
    if backfill is not None:
        # Not even force_publish: a lower version number can never be served by the `latest` policy.
        print(f"evaluation gate: HOLD: {backfill}", flush=True)
        held = GateDecision(False, backfill, float(candidate["eval_accuracy"]), None, served[0], False)  # type: ignore[index]
        return held.to_dict()
    served_accuracy = None
    if served is not None:
        features = _local_features(day, context)
        served_accuracy = evaluate(load_serving_fn(served[1]), features.files["eval"])["eval_accuracy"]
    decision = decide(
        float(candidate["eval_accuracy"]),
        served_accuracy,
        served_version=served[0] if served else None,
        tolerance=float(params["accuracy_tolerance"]),
        floor=float(params["accuracy_floor"]),
        force=bool(params["force_publish"]),
    )
    print(f"evaluation gate: {'PUBLISH' if decision.publish else 'HOLD'}: {decision.reason}", flush=True)
    return decision.to_dict()
