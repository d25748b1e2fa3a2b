"""Entry point: publish one candidate model into one serving host's TF Serving base path."""

from __future__ import annotations

import argparse
import json
import logging
import random
import socket
import sys
from dataclasses import asdict

from tfship.config import Settings
from tfship.errors import TfshipError
from tfship.publish import PublishError, PublishPolicy, Source, publish_candidate


def _parser() -> argparse.ArgumentParser:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidate", required=True, help="candidate directory, relative to the source root")
    parser.add_argument("--target", required=True, help="absolute TF Serving base path of the model on this host")
    parser.add_argument("--source-root", default=settings.storage_root)
    parser.add_argument("--webhdfs-endpoints", default=";".join(settings.webhdfs_endpoints), help="';'-separated")
    parser.add_argument("--hdfs-user", default=settings.hdfs_user)
    parser.add_argument("--host", default=socket.gethostname(), help="serving host label for logs and alerts")
    parser.add_argument("--run-id", default="manual")
    parser.add_argument("--day", default=None, help="YYYY-MM-DD; must match the manifest when given")
    parser.add_argument("--rate-limit-bps", type=int, default=0, help="bytes per second, 0 = unlimited")
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--file-attempts", type=int, default=4)
    parser.add_argument("--backoff-s", type=float, default=1.0)
    parser.add_argument("--deadline-s", type=float, default=900.0)
    parser.add_argument("--connect-timeout-s", type=float, default=5.0)
    parser.add_argument("--read-timeout-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None, help="seed of the endpoint order (tests)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one publication; print the result as one JSON line; exit 1 naming the failed check."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        source = Source(
            args.source_root,
            tuple(e for e in args.webhdfs_endpoints.split(";") if e),
            args.hdfs_user,
            connect_timeout_s=args.connect_timeout_s,
            read_timeout_s=args.read_timeout_s,
        )
        policy = PublishPolicy(
            rate_limit_bps=args.rate_limit_bps,
            keep=args.keep,
            file_attempts=args.file_attempts,
            backoff_s=args.backoff_s,
            deadline_s=args.deadline_s,
        )
        result = publish_candidate(
            source, args.candidate, args.target, host=args.host, run_id=args.run_id, day=args.day,
            policy=policy, rng=random.Random(args.seed),
        )  # fmt: skip
    except PublishError as err:
        print(f"TFSHIP_PUBLISH_FAILED check={err.check}: {err}", file=sys.stderr)
        return 1
    except TfshipError as err:
        print(f"TFSHIP_PUBLISH_FAILED: {err}", file=sys.stderr)
        return 2
    print("TFSHIP_PUBLISH " + json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
