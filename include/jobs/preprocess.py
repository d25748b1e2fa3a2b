"""spark-submit entry point: preprocess one day's raw partition into TFRecords."""

from __future__ import annotations

import argparse
import json
import sys

from tfship.data.datasets import dataset_spec
from tfship.data.preprocess import preprocess_day
from tfship.days import parse_day
from tfship.storage import open_storage


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the job, print the stats as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--day", required=True, type=parse_day)
    parser.add_argument("--storage-root", required=True)
    parser.add_argument("--webhdfs-endpoints", default="", help="';'-separated, for hdfs:// roots")
    parser.add_argument("--hdfs-user", default="root")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--raw-root", default="raw", help="root-relative directory holding <dataset>/dt=D")
    parser.add_argument("--eval-share", type=float, default=0.1)
    parser.add_argument("--train-shards", type=int, default=4)
    parser.add_argument("--eval-shards", type=int, default=1)
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    endpoints = [e for e in args.webhdfs_endpoints.split(";") if e]
    storage = open_storage(args.storage_root, endpoints, args.hdfs_user)
    spark = SparkSession.builder.getOrCreate()  # named by spark-submit's --name (the DAG: the run's id)
    try:
        stats = preprocess_day(
            spark,
            storage,
            spec=dataset_spec(args.dataset),
            day=args.day,
            eval_share=args.eval_share,
            train_shards=args.train_shards,
            eval_shards=args.eval_shards,
            raw_root=args.raw_root,
        )
    finally:
        spark.stop()
    print("TFSHIP_STATS " + json.dumps({k: stats[k] for k in ("rows_read", "rows_written", "quarantined")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
