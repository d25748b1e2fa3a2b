"""spark-submit entry point: train on several hosts as one Spark barrier stage.

Usage: train_cluster.py --workers N -- <the arguments of jobs.train>

Each of the N barrier tasks picks a port on its own host, learns every other task's address
(`allGather`), and runs `python -m jobs.train` with that TF_CONFIG: the very process a single
host runs, so there is one training code path. Worker 0 exports and uploads the candidate.
When any worker fails, Spark fails the stage and starts it again (spark.stage.maxConsecutiveAttempts);
each worker then resumes from its checkpoint in the shared --work-dir. Printed for the caller:
each worker's TFSHIP_RESUME lines and worker 0's TFSHIP_RESULT (or TFSHIP_ERROR and exit 3).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from collections import deque

from jobs.train import BAD_INPUT_EXIT, ERROR_PREFIX, RESULT_PREFIX
from tfship.training.cluster import tf_config
from tfship.training.train import RESUME_PREFIX

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGKILL when the task's Python worker dies (Spark kills it to cancel a task)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def run_worker(train_args: list[str], env_extra: dict[str, str]):
    """The barrier task: one training process, its output kept as the task's result."""

    def run(_: object):
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        index = ctx.partitionId()
        host = ctx.getTaskInfos()[index].address.rsplit(":", 1)[0]
        addresses = ctx.allGather(f"{host}:{_free_port(host)}")  # in partition order
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"} | env_extra
        env["TF_CONFIG"] = tf_config(addresses, index)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the job's --py-files included
        gpus = ctx.resources().get("gpu")
        if gpus is not None:  # only the GPUs Spark gave this task
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
        marked: dict[str, list[str]] = {"result": [], "error": [], "resume": []}
        tail: deque[str] = deque(maxlen=15)
        prefix = f"[worker {index} of {len(addresses)}]"
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs.train", *train_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            preexec_fn=_die_with_parent,
        )
        for line in process.stdout:  # type: ignore[union-attr]
            line = line.rstrip("\n")
            print(prefix, line, file=sys.stderr, flush=True)  # the executor's log
            tail.append(line)
            for key, mark in (("result", RESULT_PREFIX), ("error", ERROR_PREFIX), ("resume", RESUME_PREFIX)):
                if line.startswith(mark):
                    marked[key].append(line.removeprefix(mark))
        code = process.wait()
        if code not in (0, BAD_INPUT_EXIT):
            # Fails the stage: Spark cancels the other workers and runs the stage again.
            raise RuntimeError(f"training worker {index} on {host} exited with {code}: " + " | ".join(tail))
        yield {"index": index, "host": host, "address": addresses[index], "exit": code, **marked}

    return run


def main(argv: list[str] | None = None) -> int:
    """Run the barrier stage and print what the workers reported."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: the arguments of jobs.train")
    args = parser.parse_args(argv)
    train_args = [a for a in args.train_args if a != "--"] + ["--workers", str(args.workers)]
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()  # named by spark-submit's --name (the run's id)
    env_extra = {k: v for k, v in os.environ.items() if k.startswith("TFSHIP_")}
    try:
        sc = spark.sparkContext
        tasks = sc.parallelize(range(args.workers), args.workers).barrier()
        # Spark retries a failed barrier stage only when it feeds a shuffle (it aborts the job
        # when a barrier ResultStage fails): the repartition makes training a ShuffleMapStage.
        trained = tasks.mapPartitions(run_worker(train_args, env_extra)).repartition(1)
        reports = sorted(trained.collect(), key=lambda r: r["index"])
    finally:
        spark.stop()
    for report in reports:
        for resume in report["resume"]:
            print(f"{RESUME_PREFIX}worker {report['index']} on {report['host']}: {resume}", flush=True)
    failed = [r for r in reports if r["exit"] == BAD_INPUT_EXIT]
    if failed:
        print(ERROR_PREFIX + (failed[0]["error"] or ["training refused its input"])[-1], flush=True)
        return BAD_INPUT_EXIT
    chief = reports[0]
    if not chief["result"]:
        print(ERROR_PREFIX + "worker 0 finished without a result line", flush=True)
        return 1
    print(RESULT_PREFIX + chief["result"][-1], flush=True)
    print("TFSHIP_CLUSTER " + json.dumps({"workers": [r["address"] for r in reports]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
