"""A real NameNode + DataNode from Hadoop's own MiniDFSCluster, WebHDFS on loopback.

`python -m harness.hdfs up` starts one in the background and prints its addresses;
`python -m harness.hdfs down` stops it. Tests use `MiniHdfs` directly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness import PartUnavailable

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MANAGER_CLASS = "org.apache.hadoop.test.MiniDFSClusterManager"


def hadoop_jars_dir() -> Path:
    """Resolve (once) and return the directory of Hadoop's jars."""
    try:
        out = subprocess.run(
            [str(PROJECT_ROOT / "scripts" / "hadoop-jars")], check=True, capture_output=True, text=True
        )
    except subprocess.CalledProcessError as err:
        raise PartUnavailable(f"HDFS: resolving Hadoop jars with Maven failed: {err.stderr[-2000:]}") from err
    return Path(out.stdout.strip())


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else "java"


def _config_value(config_xml: str, name: str) -> str | None:
    match = re.search(rf"<name>{re.escape(name)}</name><value>([^<]*)</value>", config_xml)
    return match.group(1) if match else None


@dataclass
class MiniHdfs:
    """One MiniDFSCluster process with its data under `base_dir`."""

    base_dir: Path
    datanodes: int = 1
    process: subprocess.Popen | None = None
    rpc_uri: str = ""
    webhdfs_url: str = ""

    def start(self, timeout_s: float = 120.0) -> MiniHdfs:
        """Start the cluster and wait until WebHDFS answers; raise PartUnavailable otherwise."""
        jars = hadoop_jars_dir()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        details, config = self.base_dir / "details.json", self.base_dir / "cluster-conf.xml"
        for stale in (details, config):
            stale.unlink(missing_ok=True)
        log_path = self.base_dir / "minicluster.log"
        command = [
            _java(),
            "-Xmx768m",
            "-cp",
            f"{jars}/*",
            MANAGER_CLASS,
            "-format",
            "-nnport",
            "0",
            "-httpport",
            "0",
            "-datanodes",
            str(self.datanodes),
            "-D",
            f"hdfs.minidfs.basedir={self.base_dir / 'data'}",
            "-D",
            "dfs.permissions.enabled=false",
            "-D",
            "dfs.webhdfs.enabled=true",
            "-D",
            "dfs.namenode.rpc-bind-host=127.0.0.1",
            "-writeDetails",
            str(details),
            "-writeConfig",
            str(config),
        ]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while not (details.exists() and config.exists() and config.stat().st_size > 0):
            if self.process.poll() is not None:
                raise PartUnavailable(f"HDFS: MiniDFSCluster exited with {self.process.returncode}: {_tail(log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise PartUnavailable(f"HDFS: MiniDFSCluster not up after {timeout_s:.0f}s: {_tail(log_path)}")
            time.sleep(0.3)
        time.sleep(0.3)  # the config file is written in one go, but give the writer a moment
        xml = config.read_text()
        rpc, http = _config_value(xml, "fs.defaultFS"), _config_value(xml, "dfs.namenode.http-address")
        if not rpc or not http:
            raise PartUnavailable(f"HDFS: cannot read addresses from {config}")
        self.rpc_uri = rpc.replace("localhost", "127.0.0.1")
        self.webhdfs_url = "http://" + http.replace("localhost", "127.0.0.1")
        while True:
            try:
                with urllib.request.urlopen(f"{self.webhdfs_url}/webhdfs/v1/?op=LISTSTATUS", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PartUnavailable(f"HDFS: WebHDFS at {self.webhdfs_url} does not answer: {_tail(log_path)}")
            time.sleep(0.3)
        return self

    def stop(self) -> None:
        """Stop the cluster process group."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


STATE_DIR = PROJECT_ROOT / "var" / "hdfs"


def main(argv: list[str]) -> int:
    """`up` (background cluster, prints addresses), `down`, or `status`."""
    action = argv[0] if argv else "status"
    state = STATE_DIR / "state.json"
    if action == "up":
        if state.exists():
            info = json.loads(state.read_text())
            try:
                os.kill(info["pid"], 0)
                print(json.dumps(info, indent=2))
                return 0
            except OSError:
                state.unlink()
        cluster = MiniHdfs(STATE_DIR).start()
        info = {"pid": cluster.process.pid, "rpc": cluster.rpc_uri, "webhdfs": cluster.webhdfs_url}
        state.write_text(json.dumps(info))
        print(json.dumps(info, indent=2))
        print(f"export TFSHIP_STORAGE_ROOT={cluster.rpc_uri}/tfship TFSHIP_WEBHDFS_ENDPOINTS={cluster.webhdfs_url}")
        return 0
    if action == "down":
        if state.exists():
            info = json.loads(state.read_text())
            try:
                os.killpg(info["pid"], signal.SIGTERM)
            except OSError:
                pass
            state.unlink()
        print("HDFS stopped")
        return 0
    print(state.read_text() if state.exists() else "HDFS not running")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
