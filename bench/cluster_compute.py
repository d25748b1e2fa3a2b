"""Compute on the loopback cluster: preprocessing rows/s per engine and size, training 2 workers vs 1.

(a) Preprocessing, the same generated day at two sizes (default 200k and 1M rows; --quick: 20k
    and 100k), each size through:
      - one Python process (bench/preprocess.py's `baseline`: same validation, TF's writer), local files,
        started afresh for each size as each spark-submit is (the TensorFlow import is in its time);
      - include/jobs/preprocess.py on Spark local[2], local files;
      - the same on local[2] reading/writing the MiniCluster's HDFS (isolates HDFS from YARN);
      - the same on YARN, client mode, 2 executors of 1 core, HDFS in and out.
    Rows/s from the wall time of each run (spark-submit start to exit) and from the Spark jobs'
    own time (the driver's "Job N finished ... took" lines: start-up, listing and renames left out).
    The cost curve per engine is rows/s at the large size over rows/s at the small one
    (> 1: fixed costs amortise; < 1: something grows faster than the input). Peak RSS is sampled
    too: a local run's whole process tree, on YARN the biggest container (set against the
    executors' container size, which this MiniYARNCluster does not enforce and a real one does).
(b) Training at the same global batch and epochs on the same features (tests/features_support):
      - `python -m jobs.train` alone, 1 worker, 1 replica;
      - the same with 2 CPU replicas in the one process (MirroredStrategy over logical CPUs);
      - include/jobs/train_cluster.py on YARN, 2 workers (MultiWorkerMirroredStrategy).
    metrics.json records no times, so epoch ends are timed here by watching every worker's
    progress.jsonl (its callback appends and fsyncs one line per finished epoch); steady
    examples/s = (epochs - 1) x steps x global batch / (end of last epoch - end of epoch 1), which
    leaves out start-up, tf.function tracing and the first epoch, and includes each epoch's
    validation pass. Keras' own ms/step (verbose=2 lines, the executor logs on YARN) is printed too.
    The all-reduce share is measured by a probe: two processes on loopback with TF_CONFIG (the
    topology of the two YARN containers here), the same model under the same strategy, timing a
    fit step and then the batch all-reduce of gradient-shaped tensors alone.
All ratios are within one run; this machine's 2 cores are shared by every process of a candidate.
The machine may be shared with other people's jobs too: each run first waits (up to 150 s) for it
to go quiet, and the tables show the cores busy just before and during each run.

Usage: python bench/cluster_compute.py [--quick] [--rows 200000 1000000] [--skip-train] [--skip-preprocess]
Goal: none yet; it prints where the cluster pays and where it does not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import itertools
import json
import math
import os
import posixpath
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
for entry in (PROJECT_ROOT / "include", PROJECT_ROOT):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

PREPROCESS_JOB = PROJECT_ROOT / "include" / "jobs" / "preprocess.py"
TRAIN_CLUSTER_JOB = PROJECT_ROOT / "include" / "jobs" / "train_cluster.py"
DAY = dt.date(2026, 1, 15)
TRAIN_DAY = dt.date(2026, 1, 16)
CHUNK_ROWS = 200_000  # generated per call of write_day: its float64 canvas is ~5 KB a row
GUARD_S = 3600  # a hung run only
CONTAINER_MB = 512 + 384  # harness Sizing: 512m executor heap + Spark's minimum 384 MB overhead


def _load_bench_preprocess():
    """bench/preprocess.py as a module (bench/ is not a package): its `baseline`."""
    spec = importlib.util.spec_from_file_location("bench_preprocess", Path(__file__).with_name("preprocess.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# -- processes --------------------------------------------------------------------------------


def run(command: list[str], env: dict[str, str], log: Path, timeout: float = GUARD_S, on_start=None) -> float:
    """Run to completion with output to `log`; its own session, killed whole on timeout. Seconds."""
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        if on_start is not None:
            on_start(process.pid)
        try:
            code = process.wait(timeout=timeout)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    seconds = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"{' '.join(command[:8])} ... exited {code}:\n{log.read_text(errors='replace')[-4000:]}")
    return seconds


def _rss_session(pid: int) -> tuple[int, int] | None:
    """(resident bytes, session id) of a process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[21]) * os.sysconf("SC_PAGE_SIZE"), int(fields[3])  # rss (field 24), session (field 6)


class PeakRss:
    """The highest resident memory each group of processes reached (sampled 4 times a second).

    A group is what a limit would apply to: a local run's whole process tree, or one YARN
    container (its processes share a session: the NodeManager starts each under setsid).
    YARN's own physical-memory check sums the same per-process RSS over a container's tree.
    """

    def __init__(self) -> None:
        self.peaks: dict[object, int] = {}
        self.groups = lambda: {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def tree(self, pid: int) -> None:
        """Watch `pid` and everything below it, as one group."""
        from harness.cluster import descendants

        self.groups = lambda: {"tree": [pid, *descendants(pid)]}
        self._thread.start()

    def containers(self, cluster_pid: int) -> None:
        """Watch every process the cluster's JVM started, grouped by session (one per container)."""
        from harness.cluster import descendants

        def groups() -> dict[object, list[int]]:
            found: dict[object, list[int]] = {}
            for child in descendants(cluster_pid):
                seen = _rss_session(child)
                if seen and seen[1] != cluster_pid:
                    found.setdefault(seen[1], []).append(child)
            return found

        self.groups = groups
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, pids in self.groups().items():
                total = sum(seen[0] for seen in map(_rss_session, pids) if seen)
                self.peaks[key] = max(self.peaks.get(key, 0), total)
            time.sleep(0.25)

    def stop(self) -> int:
        """Stop sampling; the highest peak of any group, in MB."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return max(self.peaks.values(), default=0) // (1 << 20)


def spark_job_seconds(log: str) -> float:
    """Sum of the driver's 'Job N finished: ... took X ms' lines."""
    total = 0.0
    for value, unit in re.findall(r"Job \d+ finished: .*?, took ([0-9.]+) (ms|s)\b", log):
        total += float(value) / (1000.0 if unit == "ms" else 1.0)
    return total


def new_app_id(cluster, known: set[str]) -> str:
    [app] = [a for a in cluster.apps() if a["id"] not in known]
    assert (app["state"], app["finalStatus"]) == ("FINISHED", "SUCCEEDED"), app
    return app["id"]


def _cpu_jiffies() -> tuple[int, int]:
    """(all, idle) jiffies of the machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values), values[3] + values[4]  # idle + iowait


class CpuMeter:
    """Cores kept busy on the whole machine (every process, ours or not) since it was made."""

    def __init__(self) -> None:
        self.start = _cpu_jiffies()

    def cores(self) -> float:
        total, idle = _cpu_jiffies()
        spent = total - self.start[0]
        return (spent - (idle - self.start[1])) / spent * (os.cpu_count() or 1) if spent else 0.0


def wait_quiet(threshold: float = 0.6, window_s: float = 4.0, max_wait_s: float = 150.0) -> float:
    """Wait until the machine (other people's jobs included) is nearly idle; the busy cores last seen.

    This bench's own MiniCluster idles at ~0.1 core between runs; the machine is shared, and a
    run measured next to someone else's job measures both.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = CpuMeter()
        time.sleep(window_s)
        busy = meter.cores()
        if busy <= threshold or time.monotonic() > deadline:
            if busy > threshold:
                print(f"    machine still busy ({busy:.1f} cores) after {max_wait_s:.0f}s: measuring anyway")
            return busy


# -- (a) preprocessing ------------------------------------------------------------------------


def make_raw_day(pool: Path, target: Path, rows: int) -> None:
    """A raw day of `rows` under target/raw/mnist/dt=DAY, from cached chunks of <= CHUNK_ROWS.

    Chunk i is write_day of DAY + i (ids carry that day: no id repeats across chunks); a size
    that is a multiple of the chunk reuses the smaller size's chunks.
    """
    from tfship.data.sampledata import write_day
    from tfship.paths import raw_dir
    from tfship.storage import LocalStorage

    day_dir = target / raw_dir("mnist", DAY)
    day_dir.mkdir(parents=True, exist_ok=True)
    chunk_rows, chunks = min(rows, CHUNK_ROWS), math.ceil(rows / min(rows, CHUNK_ROWS))
    index = 0
    for chunk in range(chunks):
        size = min(chunk_rows, rows - chunk * chunk_rows)
        cache = pool / f"chunk-{chunk}-{size}"
        if not (cache / raw_dir("mnist", DAY + dt.timedelta(days=chunk)) / "_SUCCESS").exists():
            print(f"  generating {size:,} raw rows (chunk {chunk}) ...", flush=True)
            write_day(LocalStorage(f"file://{cache}"), DAY + dt.timedelta(days=chunk), rows=size, shards=8)
        for source in sorted((cache / raw_dir("mnist", DAY + dt.timedelta(days=chunk))).glob("part-*")):
            os.link(source, day_dir / f"part-{index:05d}.jsonl.gz")
            index += 1
    (day_dir / "_SUCCESS").write_bytes(b"")


def upload_dir(storage, local_root: Path, relative: str) -> None:
    """Copy one local directory's files to the same relative path on a storage root."""
    for path in sorted((local_root / relative).iterdir()):
        with open(path, "rb") as source, storage.open_write(posixpath.join(relative, path.name)) as target:
            shutil.copyfileobj(source, target, 8 << 20)


@dataclass
class PreRun:
    engine: str
    storage: str
    rows: int
    wall_s: float
    job_s: float | None = None
    note: str = ""
    busy_before: float = 0.0  # cores busy on the machine just before (someone else's load)
    busy_during: float = 0.0  # cores busy on the machine during the run (this run's own use, mostly)
    peak_rss_mb: int = 0  # the local run's process tree, or the biggest YARN container

    @property
    def rate(self) -> float:
        return self.rows / self.wall_s

    @property
    def job_rate(self) -> float | None:
        return self.rows / self.job_s if self.job_s else None


def spark_preprocess(cluster, master: str, root: str, library: str, logs: Path, jvm_options: str) -> PreRun:
    """One spark-submit of include/jobs/preprocess.py over `root`."""
    from tfship.jvm import build_hadoop_jar

    hdfs = root.startswith("hdfs://")
    args = ["--day", DAY.isoformat(), "--storage-root", root, "--hdfs-user", "root"]
    if hdfs:
        args += ["--webhdfs-endpoints", cluster.webhdfs_url]
    # The zip alone ships the library, to the driver as to the executors.
    env = {k: v for k, v in cluster.spark_env().items() if k != "PYTHONPATH"}
    quiet = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
    if master == "yarn":
        conf = dict(quiet)
        if jvm_options != "harness":
            conf |= {f"spark.{r}.extraJavaOptions": "" for r in ("driver", "yarn.am", "executor")}
        command = cluster.submit_command(PREPROCESS_JOB, *args, deploy_mode="client", conf=conf)
        command[1:1] = ["--py-files", library, "--jars", str(build_hadoop_jar())]
    else:
        from harness.cluster import TEST_JVM_OPTIONS

        conf = {**quiet, "spark.driver.host": "127.0.0.1"}
        if jvm_options == "harness":  # the same JVM flags the YARN driver and executors get
            conf["spark.driver.extraJavaOptions"] = TEST_JVM_OPTIONS
        command = [shutil.which("spark-submit") or "spark-submit", "--master", master, "--py-files", library]
        command += ["--jars", str(build_hadoop_jar())]
        for key, value in conf.items():
            command += ["--conf", f"{key}={value}"]
        command += [str(PREPROCESS_JOB), *args]
    name = f"{master.replace('[', '').replace(']', '')}-{'hdfs' if hdfs else 'local'}"
    log = logs / f"preprocess-{name}-{root.rsplit('-', 1)[-1]}.log"
    known = {a["id"] for a in cluster.apps()} if master == "yarn" else set()
    before = wait_quiet()
    meter, memory = CpuMeter(), PeakRss()
    if master == "yarn":
        memory.containers(cluster.process.pid)
        seconds = run(command, env, log)
    else:
        seconds = run(command, env, log, on_start=memory.tree)
    during, peak = meter.cores(), memory.stop()
    text = log.read_text(errors="replace")
    [line] = re.findall(r"^TFSHIP_STATS (.*)$", text, re.MULTILINE)
    note = ""
    if master == "yarn":
        app_id = new_app_id(cluster, known)
        executors = [c for c, t in cluster.container_logs(app_id).items() if "Executor: Finished task" in t]
        note = f"{len(executors)} executors ran tasks"
    stats = json.loads(line)
    return PreRun(
        "spark yarn 2x1" if master == "yarn" else f"spark {master}",
        "hdfs" if hdfs else "local",
        stats["rows_read"],
        seconds,
        spark_job_seconds(text),
        note,
        before,
        during,
        peak,
    )


def preprocessing(cluster, work: Path, sizes: list[int], engines: list[str], jvm_options: str) -> list[PreRun]:
    from tfship.packaging import publish_library_zip
    from tfship.storage import WebHdfsStorage

    logs = work / "logs"
    pool = work / "raw-pool"
    results: list[PreRun] = []
    library = ""
    for rows in sizes:
        local_root = work / f"pre-{rows}"
        print(f"\n[a] {rows:,} rows", flush=True)
        make_raw_day(pool, local_root, rows)
        raw = f"raw/mnist/dt={DAY.isoformat()}"
        hdfs_root = f"{cluster.rpc_uri}/bench/pre-{rows}"
        if {"local2-hdfs", "yarn"} & set(engines):
            storage = WebHdfsStorage(hdfs_root, [cluster.webhdfs_url], user="root")
            storage.delete("", recursive=True)
            print(f"  uploading the raw day to {hdfs_root} ...", flush=True)
            upload_dir(storage, local_root, raw)
            library = library or publish_library_zip(storage)
        if not library:
            from tfship.storage import LocalStorage

            library = publish_library_zip(LocalStorage(f"file://{work}"))
        if "python" in engines:
            print("  python baseline ...", flush=True)
            # Its own process, like each spark-submit: start-up (the TensorFlow import) is in the wall time.
            command = [
                sys.executable,
                __file__,
                "--baseline-worker",
                str(local_root / raw),
                str(work / f"baseline-{rows}"),
            ]
            log = logs / f"preprocess-python-{rows}.log"
            before = wait_quiet()
            meter, memory = CpuMeter(), PeakRss()
            seconds = run(command, dict(os.environ), log, on_start=memory.tree)
            during, peak = meter.cores(), memory.stop()
            [written] = re.findall(r"^BASELINE_WRITTEN (\d+)$", log.read_text(), re.MULTILINE)
            note = f"{int(written):,} kept"
            results.append(PreRun("python 1 process", "local", rows, seconds, None, note, before, during, peak))
            print_run(results[-1])
            shutil.rmtree(work / f"baseline-{rows}", ignore_errors=True)
        plan = [
            ("local2", "local[2]", f"file://{local_root}"),
            ("local2-hdfs", "local[2]", hdfs_root),
            ("yarn", "yarn", hdfs_root),
        ]
        for key, master, root in plan:
            if key in engines:
                print(f"  {key} ...", flush=True)
                results.append(spark_preprocess(cluster, master, root, library, logs, jvm_options))
                print_run(results[-1])
    return results


def print_run(r: PreRun) -> None:
    """One run as soon as it is measured (a later failure keeps it in the output)."""
    job = f", job {r.job_s:.1f}s ({r.job_rate:,.0f} rows/s)" if r.job_s else ""
    print(
        f"    {r.wall_s:.1f}s ({r.rate:,.0f} rows/s){job}, peak RSS {r.peak_rss_mb:,} MB, "
        f"busy {r.busy_before:.1f}/{r.busy_during:.1f} cores {r.note}",
        flush=True,
    )


def print_preprocessing(results: list[PreRun], sizes: list[int]) -> None:
    base = {r.rows: r.rate for r in results if r.engine.startswith("python")}
    print("\n(a) preprocessing: rows/s (wall = spark-submit or the Python call end to end; job = Spark jobs only)")
    header = f"{'engine':<18} {'storage':<7} {'rows':>9} {'wall s':>8} {'rows/s':>9} {'job s':>7} {'job rows/s':>10}"
    print(header + f" {'vs python':>9} {'peak RSS':>9} {'busy before/during':>18}  note")
    for r in results:
        job = f"{r.job_s:7.1f} {r.job_rate:10,.0f}" if r.job_s else f"{'-':>7} {'-':>10}"
        versus = f"{r.rate / base[r.rows]:8.2f}x" if r.rows in base else f"{'-':>9}"
        busy = f"{r.busy_before:.1f} / {r.busy_during:.1f} cores"
        line = f"{r.engine:<18} {r.storage:<7} {r.rows:9,} {r.wall_s:8.1f} {r.rate:9,.0f} {job} {versus}"
        print(f"{line} {r.peak_rss_mb:6,} MB {busy:>18}  {r.note}")
    print(
        f"peak RSS: the whole process tree of a local run; on YARN the biggest container (executors here are "
        f"{CONTAINER_MB} MB containers; this MiniYARNCluster does not enforce it, a NodeManager's default "
        "yarn.nodemanager.pmem-check-enabled=true would kill a container above it)"
    )
    if len(sizes) < 2:
        return
    small, large = sizes[0], sizes[-1]
    print(f"\ncost curve: rows/s at {large:,} rows / rows/s at {small:,} rows ({large // small}x the input)")
    for engine, storage in dict.fromkeys((r.engine, r.storage) for r in results):
        pair = {r.rows: r for r in results if (r.engine, r.storage) == (engine, storage)}
        if small in pair and large in pair:
            wall = pair[large].rate / pair[small].rate
            job = (
                f"   job rows/s {pair[large].job_rate / pair[small].job_rate:5.2f}x"
                if pair[small].job_s and pair[large].job_s
                else ""
            )
            time_growth = pair[large].wall_s / pair[small].wall_s
            memory = pair[large].peak_rss_mb / max(pair[small].peak_rss_mb, 1)
            line = f"  {engine:<18} {storage:<7} wall rows/s {wall:5.2f}x  (wall time {time_growth:5.2f}x){job}"
            print(f"{line}   peak RSS {memory:5.2f}x")


# -- (b) training -----------------------------------------------------------------------------


class ProgressWatch:
    """Times at which each watched progress.jsonl gained a line (one per finished epoch)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.ends: dict[Path, list[float]] = {p: [] for p in paths}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for path in self.paths:
                try:
                    lines = path.read_text().count("\n")
                except OSError:
                    continue
                while len(self.ends[path]) < lines:
                    self.ends[path].append(now)
            time.sleep(0.05)

    def __enter__(self) -> ProgressWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class TrainRun:
    name: str
    wall_s: float
    epoch_ends: list[float]
    started: float
    keras_ms_per_step: list[float] = field(default_factory=list)
    steps: int = 0
    strategy: dict = field(default_factory=dict)
    train_examples: int = 0
    eval_accuracy: float | None = None
    busy_before: float = 0.0
    busy_during: float = 0.0

    def steady_examples_per_s(self, global_batch: int) -> float | None:
        if len(self.epoch_ends) < 2 or not self.steps:
            return None
        span = self.epoch_ends[-1] - self.epoch_ends[0]
        return (len(self.epoch_ends) - 1) * self.steps * global_batch / span

    @property
    def first_epoch_s(self) -> float | None:
        return self.epoch_ends[0] - self.started if self.epoch_ends else None

    @property
    def steady_epoch_s(self) -> float | None:
        ends = self.epoch_ends
        return (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None


KERAS_LINE = re.compile(r"^(?:\[worker (\d+) of \d+\] )?(\d+)/(\d+) - [0-9.]+m?s - ([0-9.]+)(s|ms|us)/step", re.M)


def keras_steps(text: str, worker: str | None = None) -> tuple[int, list[float]]:
    """(steps per epoch, ms/step per epoch) from Keras' verbose=2 lines (of one worker on YARN)."""
    scale = {"s": 1000.0, "ms": 1.0, "us": 0.001}
    lines = [m for m in KERAS_LINE.finditer(text) if m.group(1) == worker and m.group(2) == m.group(3)]
    # Each epoch has a training line; the validation pass prints none at verbose=2.
    return (int(lines[0].group(3)) if lines else 0), [float(m.group(4)) * scale[m.group(5)] for m in lines]


def read_metrics(storage, log_text: str) -> dict:
    [line] = re.findall(r"^TFSHIP_RESULT (.*)$", log_text, re.MULTILINE)
    result = json.loads(line)
    with storage.open_read(f"{result['candidate']}/metrics.json") as handle:
        return json.loads(handle.read())


def train_args(work_dir: Path, epochs: int, global_batch: int, replicas: int) -> list[str]:
    return [
        "--day", TRAIN_DAY.isoformat(), "--work-dir", str(work_dir), "--epochs", str(epochs),
        "--global-batch", str(global_batch), "--replicas", str(replicas), "--hparams", "{}",
    ]  # fmt: skip


def train_local(storage, work: Path, replicas: int, epochs: int, global_batch: int, env: dict) -> TrainRun:
    work_dir = work / f"train-1w-{replicas}r"
    log = work / "logs" / f"train-1w-{replicas}r.log"
    command = [sys.executable, "-m", "jobs.train", *train_args(work_dir, epochs, global_batch, replicas)]
    before = wait_quiet()
    meter = CpuMeter()
    started = time.monotonic()
    with ProgressWatch([work_dir / "progress.jsonl"]) as watch:
        seconds = run(command, env, log)
    during = meter.cores()
    text = log.read_text(errors="replace")
    steps, ms = keras_steps(text)
    metrics = read_metrics(storage, text)
    return TrainRun(
        f"1 worker, {replicas} replica{'s' if replicas > 1 else ''}",
        seconds,
        watch.ends[work_dir / "progress.jsonl"],
        started,
        ms,
        steps,
        metrics["strategy"],
        metrics["train_examples"],
        metrics["eval_accuracy"],
        before,
        during,
    )


def train_yarn(cluster, storage, library: str, work: Path, epochs: int, global_batch: int, env: dict) -> TrainRun:
    from tfship.training.cluster import WorkerResources

    work_dir = work / "train-2w"
    log = work / "logs" / "train-2w.log"
    conf = {**WorkerResources().spark_conf(2), "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
    command = cluster.submit_command(
        TRAIN_CLUSTER_JOB, "--workers", "2", "--", *train_args(work_dir, epochs, global_batch, 1), conf=conf
    )
    command[1:1] = ["--py-files", library]
    known = {a["id"] for a in cluster.apps()}
    before = wait_quiet()
    meter = CpuMeter()
    started = time.monotonic()
    watched = [work_dir / "progress.jsonl", work_dir / "worker-1" / "progress.jsonl"]
    with ProgressWatch(watched) as watch:
        seconds = run(command, env, log)
    during = meter.cores()
    app_id = new_app_id(cluster, known)
    text = "\n".join(cluster.container_logs(app_id).values())
    steps, ms = keras_steps(text, worker="0")
    metrics = read_metrics(storage, log.read_text(errors="replace"))
    # An epoch ends for the cluster when both workers have finished it.
    ends = [max(pair) for pair in zip(*watch.ends.values(), strict=False)]
    return TrainRun(
        "2 workers on YARN",
        seconds,
        ends,
        started,
        ms,
        steps,
        metrics["strategy"],
        metrics["train_examples"],
        metrics["eval_accuracy"],
        before,
        during,
    )


def allreduce_probe(work: Path, global_batch: int, steps: int, reduces: int) -> dict | None:
    """Two probe workers on loopback; worker 0's timings (or None, saying why)."""
    import socket

    sockets = [socket.socket() for _ in range(2)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    cluster = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    processes, logs = [], []
    for index in range(2):
        tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config))
        log = work / "logs" / f"probe-{index}.log"
        logs.append(log)
        command = [sys.executable, __file__, "--probe-worker", str(global_batch), str(steps), str(reduces)]
        with open(log, "w") as out:
            processes.append(
                subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            )
    try:
        for process in processes:
            process.wait(timeout=600)
    except subprocess.TimeoutExpired:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    found = re.findall(r"^PROBE (.*)$", logs[0].read_text(errors="replace"), re.MULTILINE)
    if not found or any(p.returncode != 0 for p in processes):
        print(f"  all-reduce probe failed: {logs[0].read_text(errors='replace')[-2000:]}")
        return None
    return json.loads(found[0])


def probe_worker(global_batch: int, steps: int, reduces: int) -> int:
    """Runs in each probe process (TF_CONFIG set): time fit steps, then the gradient all-reduce alone."""
    import numpy as np

    from tfship.training.model import HParams, build_model
    from tfship.training.strategy import make_strategy

    strategy, plan = make_strategy(replicas=1, env=os.environ)
    import keras
    import tensorflow as tf

    with strategy.scope():
        model = build_model(HParams())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(global_batch * 8, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, size=global_batch * 8)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(global_batch, drop_remainder=True).repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = data.with_options(options)

    ends: list[float] = []

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[StepTimes()])
    step_s = statistics.median(b - a for a, b in itertools.pairwise(ends[5:]))

    variables = model.trainable_variables
    sizes = [int(np.prod(v.shape)) for v in variables]

    @tf.function
    def reduce_once():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            grads = [tf.ones(v.shape) for v in variables]
            return context.all_reduce(tf.distribute.ReduceOp.SUM, grads)[0][0]

        return strategy.run(replica_fn)

    for _ in range(5):
        reduce_once()
    times = []
    for _ in range(reduces):
        start = time.perf_counter()
        value = reduce_once()
        float(tf.reduce_sum(strategy.experimental_local_results(value)[0]))
        times.append(time.perf_counter() - start)
    result = {
        "worker": plan.task_index,
        "replicas": plan.replicas,
        "per_replica_batch": global_batch // plan.replicas,
        "step_s": step_s,
        "allreduce_s": statistics.median(times),
        "gradient_values": sum(sizes),
        "gradient_tensors": len(sizes),
    }
    print("PROBE " + json.dumps(result), flush=True)
    return 0


def training(cluster, work: Path, rows: int, epochs: int, global_batch: int, replicas2: bool, probe: bool) -> None:
    from tests.features_support import write_features

    from tfship.packaging import publish_library_zip
    from tfship.storage import WebHdfsStorage

    root = f"{cluster.rpc_uri}/bench/train"
    storage = WebHdfsStorage(root, [cluster.webhdfs_url], user="root")
    storage.delete("", recursive=True)
    print(f"\n[b] training: features of {rows:,} rows on {root}", flush=True)
    write_features(storage, TRAIN_DAY, rows=rows)
    library = publish_library_zip(storage)
    env = {k: v for k, v in cluster.spark_env().items() if k != "PYTHONPATH"}
    env |= {"TFSHIP_STORAGE_ROOT": root, "TFSHIP_WEBHDFS_ENDPOINTS": cluster.webhdfs_url, "TFSHIP_HDFS_USER": "root"}
    local_env = dict(env, PYTHONPATH=str(PROJECT_ROOT / "include"))
    runs = []
    print("  1 worker, 1 replica ...", flush=True)
    runs.append(train_local(storage, work, 1, epochs, global_batch, local_env))
    if replicas2:
        print("  1 worker, 2 replicas ...", flush=True)
        runs.append(train_local(storage, work, 2, epochs, global_batch, local_env))
    print("  2 workers on YARN ...", flush=True)
    runs.append(train_yarn(cluster, storage, library, work, epochs, global_batch, env))
    measured = None
    if probe:
        print("  all-reduce probe (2 processes on loopback) ...", flush=True)
        wait_quiet()
        measured = allreduce_probe(work, global_batch, steps=60, reduces=100)

    base = runs[0]
    print(
        f"\n(b) training: {base.train_examples:,} train examples, {epochs} epochs, global batch {global_batch}, "
        f"{base.steps} steps/epoch; steady = epochs 2..{epochs} (incl. validation), from progress.jsonl times"
    )
    header = f"{'candidate':<22} {'strategy':<30} {'wall s':>7} {'to ep.1 s':>9} {'epoch s':>8}"
    print(header + f" {'examples/s':>10} {'keras ms/step':>13} {'vs 1 worker':>11} {'eval acc':>8}  busy before/during")
    base_rate = base.steady_examples_per_s(global_batch)
    for r in runs:
        rate = r.steady_examples_per_s(global_batch)
        strategy = f"{r.strategy.get('kind')} r={r.strategy.get('replicas')} w={r.strategy.get('workers')}"
        ms = statistics.median(r.keras_ms_per_step[1:]) if len(r.keras_ms_per_step) > 1 else float("nan")
        versus = f"{rate / base_rate:10.2f}x" if rate and base_rate else f"{'-':>11}"
        first = f"{r.first_epoch_s:9.1f}" if r.first_epoch_s else f"{'-':>9}"
        epoch = f"{r.steady_epoch_s:8.2f}" if r.steady_epoch_s else f"{'-':>8}"
        shown = f"{rate:10,.0f}" if rate else f"{'-':>10}"
        line = f"{r.name:<22} {strategy:<30} {r.wall_s:7.1f} {first} {epoch} {shown} {ms:13.1f} {versus}"
        print(f"{line} {r.eval_accuracy:8.3f}  {r.busy_before:.1f} / {r.busy_during:.1f} cores")
    two = runs[-1]
    print(f"wall time, 2 workers on YARN / 1 worker: {two.wall_s / base.wall_s:.2f}x (start-up, staging, export in it)")
    if measured:
        share = measured["allreduce_s"] / measured["step_s"]
        print(
            f"all-reduce share of a 2-worker step (probe, worker 0): {share:.0%} "
            f"(batch all-reduce of {measured['gradient_tensors']} gradient tensors, {measured['gradient_values']:,} "
            f"floats: {measured['allreduce_s'] * 1000:.1f} ms of a {measured['step_s'] * 1000:.1f} ms fit step at "
            f"{measured['per_replica_batch']} examples/replica; synthetic in-memory data, no input pipeline; "
            "the scalar loss/metric reductions of the step are not in it)"
        )
    else:
        print("all-reduce share: not measured (probe skipped or failed)")


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k and 100k rows; a smaller training run")
    parser.add_argument("--rows", type=int, nargs="+", help="preprocessing sizes (default 200000 1000000)")
    parser.add_argument(
        "--engines", nargs="+", default=["python", "local2", "local2-hdfs", "yarn"],
        choices=["python", "local2", "local2-hdfs", "yarn"],
    )  # fmt: skip
    parser.add_argument("--plain-jvm", action="store_true", help="no C1-only/serial-GC flags on any Spark JVM")
    parser.add_argument("--train-rows", type=int, help="features rows (default 12000; --quick 3000)")
    parser.add_argument("--epochs", type=int, help="default 5; --quick 4")
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--no-replicas2", action="store_true", help="leave out 1 worker with 2 CPU replicas")
    parser.add_argument("--no-probe", action="store_true", help="leave out the all-reduce probe")
    parser.add_argument("--skip-preprocess", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and print it)")
    parser.add_argument("--probe-worker", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_worker:
        return probe_worker(*args.probe_worker)
    if args.baseline_worker:
        raw, out = (Path(p) for p in args.baseline_worker)
        print(f"BASELINE_WRITTEN {_load_bench_preprocess().baseline(raw, out)}", flush=True)
        return 0
    sizes = sorted(args.rows or ([20_000, 100_000] if args.quick else [200_000, 1_000_000]))
    train_rows = args.train_rows or (3000 if args.quick else 12_000)
    epochs = args.epochs or (4 if args.quick else 5)

    from harness.cluster import MiniCluster

    work = Path(tempfile.mkdtemp(prefix="tfship-cluster-bench-"))
    (work / "logs").mkdir()
    load = os.getloadavg()[0]
    cluster = MiniCluster(work / "cluster")
    started = time.monotonic()
    try:
        cluster.start()
        print(f"MiniCluster (HDFS + YARN) up in {cluster.started_in_s:.1f}s; work dir {work}", flush=True)
        if not args.skip_preprocess:
            jvm = "plain" if args.plain_jvm else "harness"
            print_preprocessing(preprocessing(cluster, work, sizes, args.engines, jvm), sizes)
        if not args.skip_train:
            training(cluster, work, train_rows, epochs, args.global_batch, not args.no_replicas2, not args.no_probe)
        took = time.monotonic() - started
        print(f"\nload average at start {load:.1f} on {os.cpu_count()} cores; bench took {took:.0f}s")
    finally:
        cluster.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
