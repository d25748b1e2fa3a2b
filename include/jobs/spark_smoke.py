"""Smallest real Spark job: count the lines under a URI and write the count as JSON to a local file."""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    """argv: INPUT_URI OUTPUT_JSON_PATH."""
    from pyspark.sql import SparkSession

    input_uri, output_path = (argv if argv is not None else sys.argv[1:])[:2]
    spark = SparkSession.builder.appName("tfship-smoke").getOrCreate()
    try:
        lines = spark.read.text(input_uri).count()
        master = spark.sparkContext.master
    finally:
        spark.stop()
    with open(output_path, "w", encoding="utf-8") as handle:
        json.dump({"lines": lines, "master": master, "input": input_uri}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
