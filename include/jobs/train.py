"""Training process entry point (one per worker): train on D's features and upload a candidate.

Run by the DAG's `train` task as a subprocess, so a killed or retried task resumes from the
checkpoints in --work-dir. On several hosts jobs/train_cluster.py starts one per worker, each
with its TF_CONFIG and --workers N.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tfship.config import Settings
from tfship.days import parse_day
from tfship.errors import TfshipError
from tfship.training.model import HParams
from tfship.training.strategy import tf_config_workers
from tfship.training.train import TrainConfig, train_and_export

RESULT_PREFIX = "TFSHIP_RESULT "
ERROR_PREFIX = "TFSHIP_ERROR "
BAD_INPUT_EXIT = 3  # the data or the parameters are wrong: a retry would fail the same way


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, print one RESULT line with the candidate and its metrics."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--day", required=True, type=parse_day)
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--hparams", default="{}", help="JSON object of HParams fields")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, help="hosts training together (default: as many as TF_CONFIG names)")
    parser.add_argument("--extra-file", action="append", default=[], type=Path, help="copied into the candidate")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
        config = TrainConfig(
            dataset=settings.dataset,
            model=settings.model,
            day=args.day,
            work_dir=args.work_dir,
            hparams=HParams.from_dict(json.loads(args.hparams)),
            epochs=args.epochs,
            global_batch=args.global_batch,
            replicas=args.replicas,
            workers=args.workers or tf_config_workers(os.environ.get("TF_CONFIG")),
            extra_files={path.name: path.read_bytes() for path in args.extra_file},
        )
        result = train_and_export(settings.storage.open(), config, env=os.environ)
    except TfshipError as err:
        print(ERROR_PREFIX + str(err), flush=True)
        return BAD_INPUT_EXIT
    print(RESULT_PREFIX + json.dumps(result.summary().to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
