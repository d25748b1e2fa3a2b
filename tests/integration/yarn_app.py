"""A PySpark application for tests/integration/test_yarn.py, run by spark-submit on YARN.

Every command writes its result as one JSON document to `<output>/summary` (a Spark text
output with one part), so the test reads it back from HDFS in client and cluster mode alike.

  count <input> <output> [<signal_dir>]
                                  word counts of a text file -> <output>/counts (JSON lines);
                                  with a signal dir, two tasks then mark `started-<i>` and
                                  wait for `release`
  barrier <n> <output>            one barrier stage of n tasks; each reports getTaskInfos()
"""

from __future__ import annotations

import json
import os
import sys
import time
from operator import add


def _task_container(_: object) -> str:
    time.sleep(0.5)  # long enough that both single-core executors get tasks
    return os.environ.get("CONTAINER_ID", "")


def _barrier_report(_: object):
    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    ctx.barrier()  # every task of the stage has started
    addresses = [info.address for info in ctx.getTaskInfos()]
    yield {"partition": ctx.partitionId(), "addresses": addresses, "container": os.environ.get("CONTAINER_ID", "")}


def _hold(signal_dir: str):
    def run(index: int, _: object):
        with open(os.path.join(signal_dir, f"started-{index}"), "w") as marker:
            marker.write(os.environ.get("CONTAINER_ID", ""))
        deadline = time.monotonic() + 180
        while not os.path.exists(os.path.join(signal_dir, "release")) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield index

    return run


def main(argv: list[str]) -> int:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(f"tfship-yarn-{argv[0]}").getOrCreate()
    sc = spark.sparkContext
    summary: dict = {
        "application_id": sc.applicationId,
        "master": sc.master,
        "deploy_mode": sc.getConf().get("spark.submit.deployMode"),
        "driver_container": os.environ.get("CONTAINER_ID", ""),
    }
    command, *args = argv
    if command == "count":
        source, output, *signal_dir = args
        counts = sc.textFile(source, minPartitions=4).flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(add, 4)
        counts.map(json.dumps).saveAsTextFile(f"{output}/counts")
        summary["task_containers"] = sorted(set(sc.parallelize(range(8), 8).map(_task_container).collect()))
        if signal_dir:  # the test looks at listening sockets while both executors hold a task
            summary["held"] = sc.parallelize(range(2), 2).mapPartitionsWithIndex(_hold(signal_dir[0])).collect()
    elif command == "barrier":
        n, output = int(args[0]), args[1]
        started = time.monotonic()
        summary["tasks"] = sc.parallelize(range(n), n).barrier().mapPartitions(_barrier_report).collect()
        summary["barrier_seconds"] = round(time.monotonic() - started, 1)
    else:
        raise SystemExit(f"unknown command {command}")
    sc.parallelize([json.dumps(summary)], 1).saveAsTextFile(f"{output}/summary")
    print("SUMMARY " + json.dumps(summary), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
