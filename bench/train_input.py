"""Input pipeline vs training step, replica scaling, and accuracy on the sample data.

1. examples/s of the tf.data pipeline alone (read, shuffle, batch-then-parse, prefetch);
2. examples/s the training step consumes when fed from memory (the pipeline out of the way);
   goal: pipeline at least 5x the consumption rate;
3. training examples/s with 1 and 2 replicas (MirroredStrategy over logical CPUs), each in a
   fresh process, printed as a ratio;
4. eval accuracy of a full training run on one sample day (goal: at least 0.95).
All on the same generated day, in the same run. Usage: python bench/train_input.py [--rows 10000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 2, 1)
PROBE = r"""
import json, sys, time
import tensorflow as tf
from tfship.training.strategy import make_strategy
from tfship.storage import LocalStorage
from tfship.training.features_io import make_dataset, stage_features
from tfship.training.model import HParams, build_model
import datetime as dt
root, replicas, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
strategy, plan = make_strategy(replicas=replicas, env={})
features = stage_features(LocalStorage(root), "mnist", dt.date(2026, 2, 1), None)
files, n = features.files["train"], features.examples("train")
batch = 128
def rate(fn, examples):
    fn(); start = time.perf_counter(); fn(); return examples / (time.perf_counter() - start)
if mode == "pipeline":
    data = make_dataset(files, batch_size=batch, training=True, seed=1, examples=n)
    print(json.dumps({"pipeline": rate(lambda: sum(1 for _ in data), n // batch * batch)}))
else:
    images, labels = next(iter(make_dataset(files, batch_size=n, training=False, seed=1)))
    memory = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch, drop_remainder=True).cache()
    with strategy.scope():
        model = build_model(HParams(learning_rate=0.003, filters=16))
    print(json.dumps({"step": rate(lambda: model.fit(memory, epochs=1, verbose=0), n // batch * batch)}))
"""


def probe(root: str, replicas: int, mode: str) -> dict:
    """Run one measurement in a fresh process (the replica count is fixed per process)."""
    done = subprocess.run([sys.executable, "-c", PROBE, root, str(replicas), mode], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Prepare the day (cached), measure, print ratios."""
    from tfship.jvm import build_hadoop_jar

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    root = f"file://{PROJECT_ROOT}/var/bench/train-{args.rows}"
    env = dict(os.environ, TFSHIP_STORAGE_ROOT=root)
    if not Path(root.removeprefix("file://"), "features/mnist", f"dt={DAY}", "_SUCCESS").exists():
        subprocess.run(
            [sys.executable, "-m", "jobs.generate_raw", "--day", str(DAY), "--rows", str(args.rows)],
            check=True,
            env=env,
            capture_output=True,
        )
        subprocess.run(
            [
                "spark-submit",
                "--master",
                "local[2]",
                "--conf",
                "spark.ui.enabled=false",
                "--jars",
                str(build_hadoop_jar()),
                str(PROJECT_ROOT / "include/jobs/preprocess.py"),
                "--day",
                str(DAY),
                "--storage-root",
                root,
            ],
            check=True,
            capture_output=True,
        )

    pipeline = probe(root, 1, "pipeline")["pipeline"]
    step = {replicas: probe(root, replicas, "step")["step"] for replicas in (1, 2)}
    print(f"input pipeline alone:           {pipeline:10,.0f} examples/s")
    print(f"training step, 1 replica:       {step[1]:10,.0f} examples/s")
    print(f"training step, 2 replicas:      {step[2]:10,.0f} examples/s")
    print(f"pipeline / step consumption:    {pipeline / max(step.values()):10.1f}x  (goal >= 5)")
    cores = os.cpu_count()
    print(f"2 replicas / 1 replica:         {step[2] / step[1]:10.2f}x  (logical CPU devices on {cores} cores)")

    work = Path(tempfile.mkdtemp(prefix="train-work-", dir=PROJECT_ROOT / "var" / "bench"))
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.train",
            "--day",
            str(DAY),
            "--work-dir",
            str(work),
            "--epochs",
            "8",
            "--hparams",
            json.dumps({"learning_rate": 0.003, "filters": 32}),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("TFSHIP_RESULT "))
    accuracy = json.loads(line.removeprefix("TFSHIP_RESULT "))["eval_accuracy"]
    print(
        f"full training ({args.rows} rows, 8 epochs, 2 replicas): eval accuracy {accuracy:.4f} (goal >= 0.95), "
        f"{time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
