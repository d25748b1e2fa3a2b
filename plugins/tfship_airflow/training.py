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


def run_work_dir(settings: Settings, context: Mapping[str, Any]) -> Path:
    """This run's local scratch directory (features cache, checkpoints): same run, same place."""
    dag_run = context["dag_run"]
    return Path(settings.local_work_dir) / work_dir(dag_run.dag_id, dag_run.run_id).removeprefix("work/")


def _local_features(settings: Settings, day: str, context: Mapping[str, Any]) -> Any:
    from tfship.training.features_io import stage_features

    local = run_work_dir(settings, context) / "features"
    return stage_features(settings.storage.open(), settings.dataset, parse_day(day), local)


def cross_validate_config(
    settings: Settings, hparams: dict, day: str, params: Mapping[str, Any], context: Mapping[str, Any]
) -> dict:
    """One configuration's k-fold result (one mapped task)."""
    from tfship.days import day_number
    from tfship.training.cv import cross_validate
    from tfship.training.model import HParams

    try:
        features = _local_features(settings, day, context)
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


def choose_config(settings: Settings, results: list[dict], context: Mapping[str, Any]) -> dict:
    """Write cv_results.json/png into the run's work dir and return the best configuration."""
    from tfship.training.cv import write_report

    directory = run_work_dir(settings, context) / "cv"
    best = write_report(list(results), directory)
    return {"hparams": best["hparams"], "config_id": best["config_id"], "report_dir": str(directory)}


def _train_args(settings: Settings, choice: dict, day: str, params: Mapping[str, Any], context: Mapping[str, Any]):
    """The arguments of `python -m jobs.train`, the same for one host and for every worker of a cluster."""
    report = Path(choice["report_dir"])
    return [
        "--day",
        day,
        "--work-dir",
        str(run_work_dir(settings, context) / "train"),
        "--hparams",
        json.dumps(choice["hparams"]),
        "--epochs",
        str(params["epochs"]),
        "--global-batch",
        str(params["global_batch"]),
        "--replicas",
        str(params["replicas"]),
        "--extra-file",
        str(report / "cv_results.json"),
        "--extra-file",
        str(report / "cv_results.png"),
    ]


def run_training(
    settings: Settings, choice: dict, day: str, params: Mapping[str, Any], context: Mapping[str, Any]
) -> dict:
    """Train on this host (`train_workers` 1) or on a Spark cluster, and hand on the candidate."""
    workers = int(params.get("train_workers", 1))
    if workers > 1:
        return _train_on_cluster(settings, choice, day, params, context, workers)
    return _train_here(_train_args(settings, choice, day, params, context))


def _train_here(args: list[str]) -> dict:
    """Run the training process (`python -m jobs.train`), streaming its output into the task log.

    A subprocess, so the process owns its TensorFlow runtime (logical CPU replicas must be set
    before TF starts) and a retry resumes from the per-epoch checkpoints in the work dir.
    """
    from jobs.train import BAD_INPUT_EXIT, ERROR_PREFIX, RESULT_PREFIX

    result: dict | None = None
    error = ""
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(
        [sys.executable, "-m", "jobs.train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
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


def _train_on_cluster(
    settings: Settings,
    choice: dict,
    day: str,
    params: Mapping[str, Any],
    context: Mapping[str, Any],
    workers: int,
) -> dict:
    """Submit jobs/train_cluster.py through the Spark connection: `workers` executors, one barrier stage.

    The candidate is then found on the storage root by its training key, so client and cluster
    deploy modes (where the driver's output never reaches this log) end the same way.
    """
    from jobs.train import BAD_INPUT_EXIT, ERROR_PREFIX
    from tfship.config import PROJECT_ROOT, SPARK_CONN_ID
    from tfship.data.stats import read_stats
    from tfship.packaging import publish_library_zip
    from tfship.training.cluster import WorkerResources
    from tfship.training.model import HParams
    from tfship.training.train import TrainConfig, find_trained, training_key
    from tfship_airflow.spark import NOT_ENOUGH_SLOTS, REFUSALS, MarkedLinesSparkSubmitHook

    storage = settings.storage.open()
    resources = WorkerResources.from_env(os.environ)
    hook = MarkedLinesSparkSubmitHook(
        marks=(ERROR_PREFIX,),
        reasons=(*REFUSALS, NOT_ENOUGH_SLOTS),
        conn_id=SPARK_CONN_ID,
        conf={**resources.spark_conf(workers), "spark.ui.showConsoleProgress": "false"},
        py_files=publish_library_zip(storage),
        name=f"tfship-train-{context['dag_run'].run_id}",
        application_args=["--workers", str(workers), "--", *_train_args(settings, choice, day, params, context)],
        env_vars={k: v for k, v in os.environ.items() if k.startswith("TFSHIP_")},
    )
    try:
        hook.submit(str(PROJECT_ROOT / "include" / "jobs" / "train_cluster.py"))
    except AirflowException as err:
        refused = hook.marked.get(ERROR_PREFIX)
        if refused and f"Error code is: {BAD_INPUT_EXIT}." in str(err):
            raise AirflowFailException(refused) from err
        said = [hook.explained[r] for r in REFUSALS if r in hook.explained]
        if said:  # the cluster will refuse this request every time: no retry
            raise AirflowFailException(f"the cluster refused {workers} training workers: {said[-1]}") from err
        if NOT_ENOUGH_SLOTS in hook.explained:  # may pass later on a busier or growing cluster
            raise AirflowException(
                f"the cluster could not start {workers} training workers at once: {hook.explained[NOT_ENOUGH_SLOTS]}"
            ) from err
        raise
    config = TrainConfig(
        dataset=settings.dataset,
        model=settings.model,
        day=parse_day(day),
        work_dir=Path("unused"),
        hparams=HParams.from_dict(dict(choice["hparams"])),
        epochs=int(params["epochs"]),
        global_batch=int(params["global_batch"]),
        replicas=int(params["replicas"]),
        workers=workers,
    )
    key = training_key(config, read_stats(storage, settings.dataset, config.day))
    trained = find_trained(storage, config, key)
    if trained is None:
        raise AirflowException(f"the training job succeeded but no candidate of {day} has training key {key[:12]}")
    return trained.summary().to_dict()


def evaluation_gate(
    settings: Settings,
    candidate: Mapping[str, Any],
    day: str,
    params: Mapping[str, Any],
    context: Mapping[str, Any],
    drift: Mapping[str, Any] | None = None,
) -> dict:
    """Score the served model on the same eval split and decide whether the candidate may go out (or drift holds it)."""
    from tfship.release.gate import GateDecision, decide, hold_for_drift, newer_day_served
    from tfship.release.serving_dir import ServingDir
    from tfship.training.model import load_serving_fn
    from tfship.training.train import Candidate, evaluate

    trained = Candidate.from_dict(candidate)
    # The first host stands for all: every host receives the same versions.
    serving_dir = ServingDir(settings.serving_hosts[0].serving_dir)
    served = serving_dir.newest()
    backfill = newer_day_served(parse_day(day), served)
    if backfill is not None:
        # Not even force_publish: a lower version number can never be served by the `latest` policy.
        print(f"evaluation gate: HOLD: {backfill}", flush=True)
        return GateDecision(False, backfill, float(trained.eval_accuracy), None, int(served), False).to_dict()
    served_accuracy = None
    if served is not None:
        features = _local_features(settings, day, context)
        served_fn = load_serving_fn(serving_dir.version_dir(served))
        served_accuracy = evaluate(served_fn, features.files["eval"])["eval_accuracy"]
    decision = decide(
        float(trained.eval_accuracy),
        served_accuracy,
        served_version=int(served) if served is not None else None,
        tolerance=float(params["accuracy_tolerance"]),
        floor=float(params["accuracy_floor"]),
        force=bool(params["force_publish"]),
    )
    decision = hold_for_drift(decision, drift)
    print(f"evaluation gate: {'PUBLISH' if decision.publish else 'HOLD'}: {decision.reason}", flush=True)
    return decision.to_dict()
