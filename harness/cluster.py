"""HDFS and YARN together on loopback: Hadoop's MiniDFSCluster + MiniYARNCluster in one JVM.

`python -m harness.cluster up` starts one in the background and prints its addresses and the
HADOOP_CONF_DIR to give spark-submit; `python -m harness.cluster down` stops it. Tests use
`MiniCluster` directly (the `yarn_cluster` fixture in tests/conftest.py).

One JVM of our own (harness/hdfs/TfshipMiniCluster.java, compiled here once) rather than
Hadoop's MiniHadoopClusterManager, which (read in its source) also starts a JobHistoryServer and
the MapReduce ShuffleHandler aux-service (listeners Spark does not use), and writes the
configuration it was given rather than the live one: with ephemeral ports that file would say
`localhost:0` for the ResourceManager.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness import PartUnavailable, apt_install
from harness.hdfs import _java, _tail, hadoop_jars_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = PROJECT_ROOT / "harness" / "hdfs" / "TfshipMiniCluster.java"
LOOPBACK = "127.0.0.1"
# Short-lived test JVMs on 2 cores spend much of their start in JIT and GC threads: C1 only and the
# serial GC made a trivial client-mode job 25-50% faster in bench/yarn_submit.py (4 paired runs).
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


@dataclass(frozen=True)
class Sizing:
    """What the NodeManager offers and what each Spark container asks for.

    A container is heap + max(384 MB, 10%) overhead, rounded up to a multiple of the minimum
    allocation: 512m heaps give 896 MB containers (the default 1024 MB minimum would round them
    to 1024). The NodeManager's 6144 MB hold an AM and two training workers (jobs/train_cluster.py:
    512m heap + 1536m overhead for the TensorFlow process = 2048 MB each, 4992 MB in all).
    The maximum allocation (2048 MB, 4 vcores) is what one container may ask for: spark-submit
    refuses more memory before submitting, the ResourceManager refuses more vcores when the
    ApplicationMaster asks.
    """

    nm_memory_mb: int = 6144
    nm_vcores: int = 4
    min_allocation_mb: int = 128
    max_allocation_mb: int = 2048
    max_allocation_vcores: int = 4
    executor_memory: str = "512m"
    executor_cores: int = 1
    executors: int = 2
    am_memory: str = "512m"  # spark.yarn.am.memory (client mode) and spark.driver.memory (cluster mode)


def _pyspark_home() -> Path:
    import pyspark  # the venv's; its jars/ is what executors load

    return Path(pyspark.__file__).resolve().parent


def _compile_launcher(jars: Path) -> Path:
    """javac the launcher against the resolved jars (cached by source and jar set)."""
    digest = hashlib.sha256(LAUNCHER.read_bytes() + (jars / ".pom-sha").read_bytes()).hexdigest()[:16]
    out = jars.parent / "cluster-launcher" / digest
    if (out / "TfshipMiniCluster.class").exists():
        return out
    javac = shutil.which("javac") or (os.environ.get("JAVA_HOME", "") and Path(os.environ["JAVA_HOME"], "bin", "javac"))
    if not javac or not Path(javac).exists():
        apt_install("openjdk-17-jdk-headless", part="yarn")  # javac: the JRE alone cannot compile
        javac = shutil.which("javac")
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(javac), "-d", str(out), "-cp", f"{jars}/*", str(LAUNCHER)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise PartUnavailable(f"yarn: compiling {LAUNCHER.name} failed: {done.stderr[-2000:]}")
    return out


def _read_conf(path: Path) -> dict[str, str]:
    root = ET.parse(path).getroot()
    return {p.findtext("name") or "": p.findtext("value") or "" for p in root.iter("property")}


def _write_site(path: Path, props: dict[str, str]) -> None:
    lines = [f"  <property><name>{k}</name><value>{v}</value></property>" for k, v in props.items()]
    path.write_text('<?xml version="1.0"?>\n<configuration>\n' + "\n".join(lines) + "\n</configuration>\n")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (YARN containers run in their own sessions, not our group)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, ...
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def stop_cluster(pid: int, base_dir: Path) -> None:
    """Ask the launcher to stop (its `stop` file), then SIGTERM, then SIGKILL; kill leftover containers."""
    left = descendants(pid)  # containers run under setsid: not in the JVM's process group
    (base_dir / "stop").touch()
    if not _wait_gone(pid, 30):
        os.killpg(pid, signal.SIGTERM)
        if not _wait_gone(pid, 15):
            os.killpg(pid, signal.SIGKILL)
    for child in left:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


@dataclass
class MiniCluster:
    """One JVM with a NameNode, DataNode(s), a ResourceManager and a NodeManager, data under base_dir."""

    base_dir: Path
    sizing: Sizing = field(default_factory=Sizing)
    datanodes: int = 1
    process: subprocess.Popen | None = None
    rpc_uri: str = ""  # hdfs://127.0.0.1:port
    webhdfs_url: str = ""  # http://127.0.0.1:port (NameNode HTTP, WebHDFS under /webhdfs/v1)
    rm_address: str = ""  # 127.0.0.1:port (yarn.resourcemanager.address)
    rm_webapp_url: str = ""  # http://127.0.0.1:port (REST under /ws/v1/cluster)
    conf_dir: Path | None = None  # HADOOP_CONF_DIR for clients
    started_in_s: float = 0.0

    def _properties(self) -> dict[str, str]:
        s = self.sizing
        return {
            "hdfs.minidfs.basedir": str(self.base_dir / "hdfs"),
            "tfship.datanodes": str(self.datanodes),
            "dfs.permissions.enabled": "false",
            "dfs.webhdfs.enabled": "true",
            # MiniDFSCluster puts DataNodes on 127.0.0.1 itself; the NameNode needs telling.
            "dfs.namenode.rpc-bind-host": LOOPBACK,
            "dfs.namenode.http-bind-host": LOOPBACK,
            # MiniYARNCluster advertises "localhost"; these make every server bind loopback only.
            "yarn.resourcemanager.bind-host": LOOPBACK,
            "yarn.nodemanager.bind-host": LOOPBACK,
            "yarn.timeline-service.bind-host": LOOPBACK,
            # The CapacityScheduler (default) wants a capacity-scheduler.xml queue file.
            "yarn.resourcemanager.scheduler.class": (
                "org.apache.hadoop.yarn.server.resourcemanager.scheduler.fifo.FifoScheduler"
            ),
            # MiniYARNCluster overwrites yarn.nodemanager.resource.memory-mb with this key (default 4096).
            "yarn.minicluster.yarn.nodemanager.resource.memory-mb": str(s.nm_memory_mb),
            "yarn.nodemanager.resource.cpu-vcores": str(s.nm_vcores),
            "yarn.scheduler.minimum-allocation-mb": str(s.min_allocation_mb),
            "yarn.scheduler.maximum-allocation-mb": str(s.max_allocation_mb),
            "yarn.scheduler.maximum-allocation-vcores": str(s.max_allocation_vcores),
            # A fuller disk must not mark the only node unhealthy (default: 90%).
            "yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage": "99",
        }

    def start(self, timeout_s: float = 240.0) -> MiniCluster:
        """Start HDFS + YARN, write the client conf dir, wait until both answer over HTTP."""
        started = time.monotonic()
        jars = hadoop_jars_dir()
        classes = _compile_launcher(jars)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        conf_xml = self.base_dir / "cluster-conf.xml"
        conf_xml.unlink(missing_ok=True)
        (self.base_dir / "stop").unlink(missing_ok=True)
        log_path = self.base_dir / "minicluster.log"
        command = [
            _java(),
            "-Xmx1g",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dtest.build.data={self.base_dir / 'yarn'}",  # MiniYARNCluster's work dir (NM local and log dirs)
            "-cp",
            f"{jars}/*:{classes}",
            "TfshipMiniCluster",
            str(self.base_dir),
            *(f"{k}={v}" for k, v in self._properties().items()),
        ]
        env = dict(os.environ)
        env.pop("HADOOP_CONF_DIR", None)  # a client conf of an older cluster must not leak in
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.base_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = started + timeout_s
        while not conf_xml.exists():
            if self.process.poll() is not None:
                raise PartUnavailable(f"yarn: the minicluster exited with {self.process.returncode}: {_tail(log_path)}")
            if time.monotonic() > deadline:
                self._kill()
                raise PartUnavailable(f"yarn: the minicluster was not up after {timeout_s:.0f}s: {_tail(log_path)}")
            time.sleep(0.3)
        live = _read_conf(conf_xml)
        loopback = {k: v.replace("localhost", LOOPBACK) for k, v in live.items()}
        self.rpc_uri = loopback["fs.defaultFS"]
        self.webhdfs_url = f"http://{loopback['dfs.namenode.http-address']}"
        self.rm_address = loopback["yarn.resourcemanager.address"]
        self.rm_webapp_url = f"http://{loopback['yarn.resourcemanager.webapp.address']}"
        self.conf_dir = self._write_client_conf(loopback)
        self._wait_http(deadline, log_path)
        self.started_in_s = time.monotonic() - started
        return self

    def _write_client_conf(self, live: dict[str, str]) -> Path:
        """core-site, hdfs-site and yarn-site with loopback addresses only, for spark-submit."""
        conf_dir = self.base_dir / "hadoop-conf"
        conf_dir.mkdir(exist_ok=True)
        _write_site(conf_dir / "core-site.xml", {"fs.defaultFS": self.rpc_uri})
        hdfs_keys = ("dfs.namenode.rpc-address", "dfs.namenode.http-address")
        _write_site(conf_dir / "hdfs-site.xml", {**{k: live[k] for k in hdfs_keys}, "dfs.replication": "1"})
        yarn_keys = (
            "yarn.resourcemanager.address",  # clients submit here
            "yarn.resourcemanager.scheduler.address",  # the ApplicationMaster asks for containers here
            "yarn.resourcemanager.resource-tracker.address",
            "yarn.resourcemanager.admin.address",
            "yarn.resourcemanager.webapp.address",  # REST: cluster-mode tracking (yarn_track_via_rm_api)
        )
        yarn_site = {**{k: live[k] for k in yarn_keys}, "yarn.resourcemanager.hostname": LOOPBACK}
        _write_site(conf_dir / "yarn-site.xml", yarn_site)
        return conf_dir

    def _wait_http(self, deadline: float, log_path: Path) -> None:
        while True:
            try:
                _get_json(f"{self.webhdfs_url}/webhdfs/v1/?op=LISTSTATUS")
                metrics = _get_json(f"{self.rm_webapp_url}/ws/v1/cluster/metrics")["clusterMetrics"]
                if metrics["activeNodes"] >= 1 and metrics["totalMB"] == self.sizing.nm_memory_mb:
                    return
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                self._kill()
                raise PartUnavailable(f"yarn: WebHDFS or the ResourceManager REST does not answer: {_tail(log_path)}")
            time.sleep(0.3)

    def _kill(self) -> None:
        """A cluster that did not come up: nothing in it to keep."""
        if self.process and self.process.poll() is None:
            left = descendants(self.process.pid)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            for child in left:
                if _alive(child):
                    os.kill(child, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the JVM (YARN first, so containers are killed, then HDFS) and anything it left."""
        if self.process and self.process.poll() is None:
            stop_cluster(self.process.pid, self.base_dir)
            self.process.wait()

    def container_logs(self, app_id: str, name: str = "stderr") -> dict[str, str]:
        """Each container's log file `name` of one application, from the NodeManager's log dirs."""
        # Not "**": that walks into appcache dirs the NodeManager is deleting (FileNotFoundError).
        found = (self.base_dir / "yarn").glob(f"*/*/*-logDir-nm-*/{app_id}/container_*/{name}")
        return {path.parent.name: path.read_text(errors="replace") for path in sorted(found)}

    def apps(self) -> list[dict]:
        """Every application the ResourceManager knows (its REST API)."""
        return (_get_json(f"{self.rm_webapp_url}/ws/v1/cluster/apps").get("apps") or {}).get("app") or []

    # -- Spark on this cluster -------------------------------------------------------------

    def spark_env(self) -> dict[str, str]:
        """The environment spark-submit needs: the client conf dir, loopback, the venv's python."""
        assert self.conf_dir, "start() first"
        env = dict(os.environ)
        env.update(
            HADOOP_CONF_DIR=str(self.conf_dir),
            YARN_CONF_DIR=str(self.conf_dir),
            SPARK_LOCAL_IP=LOOPBACK,
            PYSPARK_PYTHON=sys.executable,
        )
        return env

    def spark_conf(self) -> dict[str, str]:
        """--conf settings for `--master yarn` on this cluster, in either deploy mode."""
        s = self.sizing
        return {
            # The NodeManager shares this machine's disk: executors load pyspark's jars in place
            # (local:) instead of ~460 MB uploaded to HDFS and localized per application.
            "spark.yarn.jars": f"local:{_pyspark_home() / 'jars'}/*",
            "spark.pyspark.python": sys.executable,
            "spark.driver.host": LOOPBACK,
            "spark.yarn.appMasterEnv.SPARK_LOCAL_IP": LOOPBACK,  # the cluster-mode driver (and its UI)
            "spark.executorEnv.SPARK_LOCAL_IP": LOOPBACK,
            "spark.executor.instances": str(s.executors),
            "spark.executor.memory": s.executor_memory,
            "spark.executor.cores": str(s.executor_cores),
            "spark.yarn.am.memory": s.am_memory,
            "spark.driver.memory": s.am_memory,
            # Start no job before every executor has registered (a barrier stage counts slots).
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
            # A barrier stage that can never get its slots fails after 5 checks 2 s apart
            # (Spark's defaults, 15 s x 40, make that 10 minutes).
            "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "2s",
            "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "5",
            "spark.yarn.maxAppAttempts": "1",  # a failing test app fails once, not twice
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.extraJavaOptions": TEST_JVM_OPTIONS,
            "spark.yarn.am.extraJavaOptions": TEST_JVM_OPTIONS,
            "spark.executor.extraJavaOptions": TEST_JVM_OPTIONS,
        }

    def submit_command(
        self, app: str | Path, *app_args: str, deploy_mode: str = "client", conf: dict[str, str] | None = None
    ) -> list[str]:
        """The spark-submit command line for `app` on this cluster."""
        merged = {**self.spark_conf(), **(conf or {})}
        command = [shutil.which("spark-submit") or "spark-submit", "--master", "yarn", "--deploy-mode", deploy_mode]
        for key, value in merged.items():
            command += ["--conf", f"{key}={value}"]
        return [*command, str(app), *app_args]

    def write_spark_defaults(self, spark_conf_dir: Path) -> Path:
        """A spark-defaults.conf with spark_conf(), for a plain `spark-submit --master yarn` by hand."""
        spark_conf_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{k} {v}" for k, v in {"spark.master": "yarn", **self.spark_conf()}.items()]
        (spark_conf_dir / "spark-defaults.conf").write_text("\n".join(lines) + "\n")
        return spark_conf_dir


STATE_DIR = PROJECT_ROOT / "var" / "cluster"


def main(argv: list[str]) -> int:
    """`up` (background cluster, prints addresses), `down`, or `status`."""
    action = argv[0] if argv else "status"
    state = STATE_DIR / "state.json"
    if action == "up":
        if state.exists():
            info = json.loads(state.read_text())
            if _alive(info["pid"]):
                print(json.dumps(info, indent=2))
                return 0
            state.unlink()
        if STATE_DIR.exists():
            shutil.rmtree(STATE_DIR)  # a fresh, formatted cluster each time
        cluster = MiniCluster(STATE_DIR).start()
        spark_conf_dir = cluster.write_spark_defaults(STATE_DIR / "spark-conf")
        info = {
            "pid": cluster.process.pid,
            "hdfs_rpc": cluster.rpc_uri,
            "webhdfs": cluster.webhdfs_url,
            "resourcemanager": cluster.rm_address,
            "resourcemanager_webapp": cluster.rm_webapp_url,
            "hadoop_conf_dir": str(cluster.conf_dir),
            "spark_conf_dir": str(spark_conf_dir),
            "started_in_s": round(cluster.started_in_s, 1),
            # SparkSubmitOperator(conn_id="spark_yarn", yarn_track_via_rm_api=True) polls the RM's REST API.
            "airflow_conn_spark_yarn": {
                "conn_type": "spark",
                "host": "yarn",
                "extra": {"deploy-mode": "cluster", "yarn_resourcemanager_webapp_address": cluster.rm_webapp_url},
            },
        }
        state.write_text(json.dumps(info))
        print(json.dumps(info, indent=2))
        print(
            f"export HADOOP_CONF_DIR={cluster.conf_dir} YARN_CONF_DIR={cluster.conf_dir} "
            f"SPARK_CONF_DIR={spark_conf_dir} SPARK_LOCAL_IP={LOOPBACK}"
        )
        return 0
    if action == "down":
        if state.exists():
            info = json.loads(state.read_text())
            if _alive(info["pid"]):
                stop_cluster(info["pid"], STATE_DIR)
            state.unlink()
        print("HDFS + YARN stopped")
        return 0
    print(state.read_text() if state.exists() else "HDFS + YARN not running")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
