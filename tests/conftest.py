"""Shared fixtures: storage roots on local disk and on a real HDFS, a real Docker engine.

A real part that cannot start fails the tests that need it, saying what and why. A developer
may set TFSHIP_ALLOW_SKIP=hdfs,docker,spark,yarn to skip them instead; CI (CI=true) never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from harness import PartUnavailable

PROJECT_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


# Run by `make test` on two pytest-xdist workers (`--dist loadscope`, scopes as below). These
# share Airflow's metadata database under var/airflow or the daily DAG's serving container
# (tfserving-mnist on 8500/8501), so they run on one worker, in order; every other module is a
# scope of its own, so its module- and session-scoped parts (a YARN cluster, a fleet) start once.
# The scheduler story has its own Airflow home, serving host and ports: it runs beside them, and
# starts first (with `--no-loadscope-reorder` scopes go out in collection order), so the two
# longest scopes run side by side and the short ones fill in behind them.
ONE_WORKER = ("tests/e2e/", "tests/plugins/", "tests/dags/", "tests/publish/test_publish_dag.py")
FIRST = ("tests/scheduler/",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return 0 if module.startswith(FIRST) else 1 if module.startswith(ONE_WORKER) else 2

    items.sort(key=rank)  # stable: each module keeps its order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    # Not xdist_group marks: xdist 3.8 renames node ids for them, which pytest 9.2's ids ignore.
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByPart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "airflow-and-tfserving-mnist" if module.startswith(ONE_WORKER) else module

    return ByPart(config, log)


def pytest_sessionstart(session: pytest.Session) -> None:
    from tests.notes import NOTES_FILE

    if not hasattr(session.config, "workerinput"):  # the main process, before any worker starts
        NOTES_FILE.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The notes tests left (tests/notes.py), after pytest's output capture."""
    from tests.notes import NOTES_FILE

    if NOTES_FILE.exists() and not hasattr(terminalreporter.config, "workerinput"):
        terminalreporter.section("tfship notes")
        for line in NOTES_FILE.read_text().splitlines():
            terminalreporter.write_line(line)


def _skip_allowed(part: str) -> bool:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    return part in {p.strip() for p in os.environ.get("TFSHIP_ALLOW_SKIP", "").split(",")}


def require_part(part: str, start: Callable[[], T]) -> T:
    """Start a real part or fail (skip only where a developer asked for it)."""
    try:
        return start()
    except PartUnavailable as err:
        if _skip_allowed(part):
            pytest.skip(f"{part} unavailable and TFSHIP_ALLOW_SKIP names it: {err}")
        pytest.fail(f"{part} did not start: {err}", pytrace=False)


@pytest.fixture
def local_storage(tmp_path: Path):
    """A fresh file:// storage root."""
    from tfship.storage import LocalStorage

    root = tmp_path / "storage"
    root.mkdir()
    return LocalStorage(f"file://{root}")


@pytest.fixture(scope="session")
def hdfs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One real MiniDFSCluster (NameNode + DataNode) for the whole session."""
    from harness.hdfs import MiniHdfs

    cluster = MiniHdfs(tmp_path_factory.mktemp("hdfs"))
    require_part("hdfs", cluster.start)
    yield cluster
    cluster.stop()


@pytest.fixture
def hdfs_storage(hdfs_cluster, request: pytest.FixtureRequest):
    """A fresh hdfs:// storage root on the session's cluster, spoken to over WebHDFS."""
    from tfship.storage import WebHdfsStorage

    root = f"{hdfs_cluster.rpc_uri}/tests/{request.node.name.replace('[', '_').replace(']', '')}"
    storage = WebHdfsStorage(root, [hdfs_cluster.webhdfs_url], user=os.environ.get("USER", "root"))
    storage.delete("", recursive=True)
    storage.makedirs("")
    return storage


@pytest.fixture(scope="session")
def yarn_cluster(tmp_path_factory: pytest.TempPathFactory, spark_submit) -> Iterator:
    """HDFS + YARN (ResourceManager, one NodeManager) in one JVM on loopback, for the whole session."""
    from harness.cluster import MiniCluster

    cluster = MiniCluster(tmp_path_factory.mktemp("yarn"))
    require_part("yarn", cluster.start)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def docker_base_url() -> str:
    """The address of a Docker engine that answers (started here if none did)."""
    from harness.docker_engine import ensure_engine

    return require_part("docker", ensure_engine)


@pytest.fixture(scope="session")
def spark_submit() -> str:
    """pyspark's own spark-submit, checked to run (Java present)."""

    def check() -> str:
        binary = shutil.which("spark-submit")
        if not binary:
            raise PartUnavailable("spark-submit is not on PATH (is the venv's bin on PATH?)")
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise PartUnavailable(f"spark-submit --version failed: {done.stderr[-1500:]}")
        return binary

    return require_part("spark", check)


@pytest.fixture(scope="session")
def spark(spark_submit):
    """An in-process SparkSession on local[2] (the same Spark that spark-submit runs)."""
    import logging

    from pyspark.sql import SparkSession

    from tfship.jvm import build_hadoop_jar

    logging.getLogger("py4j").setLevel(logging.ERROR)  # its shutdown chatter outlives pytest's capture

    session = (
        SparkSession.builder.master("local[2]")
        .appName("tfship-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.jars", str(build_hadoop_jar()))
        .getOrCreate()
    )
    yield session
    session.stop()
