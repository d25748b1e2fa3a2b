"""Entry point: publish one candidate model into one serving host's serving dir."""

from __future__ import annotations

import argparse
import json
import logging
import random
import socket
import sys

from tfship.config import Settings, StorageConfig
from tfship.errors import TfshipError
from tfship.release.publish import PublishError, PublishPolicy, publish_candidate
from tfship.release.transfer import Source


def _parser() -> argparse.ArgumentParser:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidate", required=True, help="candidate directory, relative to the source root")
    parser.add_argument("--serving-dir", required=True, help="the model's TF Serving base path on this host (absolute)")
    parser.add_argument("--source-root", default=settings.storage_root)
    parser.add_argument("--webhdfs-endpoints", default=";".join(settings.webhdfs_endpoints), help="';'-separated")
    parser.add_argument("--hdfs-user", default=settings.hdfs_user)
    parser.add_argument("--host", default=socket.gethostname(), help="serving host label for logs and alerts")
    parser.add_argument("--run-id", default="manual")
    parser.add_argument("--day", default=None, help="YYYY-MM-DD; must match the manifest when given")
    parser.add_argument("--rate-limit-bps", type=int, default=0, help="bytes per second, 0 = unlimited")
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--streams", type=int, default=4, help="files read at once")
    parser.add_argument("--space-margin-bytes", type=int, default=64 << 20, help="free space to keep beyond the model")
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
        storage = StorageConfig(
            args.source_root, tuple(e for e in args.webhdfs_endpoints.split(";") if e), args.hdfs_user
        )
        source = Source(storage, connect_timeout_s=args.connect_timeout_s, read_timeout_s=args.read_timeout_s)
        policy = PublishPolicy(
            rate_limit_bps=args.rate_limit_bps,
            keep=args.keep,
            streams=args.streams,
            space_margin_bytes=args.space_margin_bytes,
            file_attempts=args.file_attempts,
            backoff_s=args.backoff_s,
            deadline_s=args.deadline_s,
        )
        result = publish_candidate(
            source,
            args.candidate,
            args.serving_dir,
            host=args.host,
            run_id=args.run_id,
            day=args.day,
            policy=policy,
            rng=random.Random(args.seed),
        )
    except PublishError as err:
        print(f"TFSHIP_PUBLISH_FAILED check={err.check}: {err}", file=sys.stderr)
        return 1
    except TfshipError as err:
        print(f"TFSHIP_PUBLISH_FAILED: {err}", file=sys.stderr)
        return 2
    print("TFSHIP_PUBLISH " + json.dumps(result.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
