"""Spark on the test YARN: cluster start-up, and a trivial job's spark-submit time per deploy mode.

The baseline is the same job with `--master local[2]` in the same run: the ratio is what YARN
adds (an ApplicationMaster container, two executor containers, HDFS staging). The harness runs
the driver, AM and executors with C1-only JIT and the serial GC (harness.cluster.TEST_JVM_OPTIONS);
with --plain-jvm, client mode runs once more without them, to check that they still pay.

Usage: python bench/yarn_submit.py [--runs 1] [--plain-jvm]
Goal: none yet; it prints where the time goes so the harness's timeouts can be set from data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.cluster import MiniCluster

APP = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("tfship-trivial").getOrCreate()
total = spark.sparkContext.parallelize(range(1000), 2).map(lambda x: x * x).sum()
assert total == 332833500, total
spark.stop()
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--plain-jvm", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tfship-yarn-bench-"))
    app = work / "trivial.py"
    app.write_text(APP)
    load = os.getloadavg()[0]
    cluster = MiniCluster(work / "cluster")
    try:
        cluster.start()
        print(f"cluster start (HDFS + YARN, ready over HTTP): {cluster.started_in_s:.1f}s")
        env = cluster.spark_env()
        local_env = {k: v for k, v in env.items() if k not in ("HADOOP_CONF_DIR", "YARN_CONF_DIR")}
        spark_submit = shutil.which("spark-submit") or "spark-submit"
        runs: dict[str, list[float]] = {"local[2]": [], "yarn client": [], "yarn cluster": []}
        if args.plain_jvm:
            runs["yarn client, plain JVM"] = []
        plain = {
            "spark.driver.extraJavaOptions": "",
            "spark.yarn.am.extraJavaOptions": "",
            "spark.executor.extraJavaOptions": "",
        }
        for _ in range(args.runs):
            runs["local[2]"].append(timed([spark_submit, "--master", "local[2]", str(app)], local_env))
            runs["yarn client"].append(timed(cluster.submit_command(app, deploy_mode="client"), env))
            runs["yarn cluster"].append(timed(cluster.submit_command(app, deploy_mode="cluster"), env))
            if args.plain_jvm:
                runs["yarn client, plain JVM"].append(timed(cluster.submit_command(app, conf=plain), env))
        baseline = min(runs["local[2]"])
        for name, seconds in runs.items():
            best = min(seconds)
            print(f"{name:>22}: best {best:6.1f}s of {len(seconds)}  ({best / baseline:.1f}x local[2])")
        print(f"load average at start: {load:.1f} on {os.cpu_count()} cores")
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
