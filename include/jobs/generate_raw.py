"""Write sample raw partitions: `python -m jobs.generate_raw --day 2026-11-25 [--days 3]`.

Drift on purpose (every day written gets it): `--brightness-shift 60`, `--invert`, `--missing-class 3`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict

from tfship.config import Settings
from tfship.data.sampledata import Distortion, write_day
from tfship.days import parse_day
from tfship.storage import open_storage


def main(argv: list[str] | None = None) -> int:
    """Generate one or more consecutive days ending at --day and print a JSON line per day."""
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--day", required=True, type=parse_day, help="last day to write, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=1, help="how many days ending at --day")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--root", default=settings.storage_root, help="storage root URI")
    parser.add_argument("--dataset", default=settings.dataset)
    drift = parser.add_argument_group("drift on purpose")
    drift.add_argument("--brightness-shift", type=int, default=0, help="added to every pixel, clipped to 0..255")
    drift.add_argument("--invert", action="store_true", help="inverted images (255 - pixel)")
    drift.add_argument("--missing-class", type=int, default=None, help="a label 0..9 left out of the day")
    args = parser.parse_args(argv)
    distortion = Distortion(args.brightness_shift, args.invert, args.missing_class)
    storage = open_storage(args.root, settings.webhdfs_endpoints, settings.hdfs_user)
    for offset in range(args.days - 1, -1, -1):
        day = args.day - dt.timedelta(days=offset)
        summary = write_day(
            storage,
            day,
            dataset=args.dataset,
            rows=args.rows,
            shards=args.shards,
            bad_fraction=args.bad_fraction,
            distortion=distortion,
        )
        print(json.dumps(asdict(summary) | {"valid_rows": summary.valid_rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
