"""Debian's nginx on loopback in front of serving hosts: the load balancer of tests and of `make run`-style setups.

`NginxBalancer(conf_dir, hosts).start()` writes the config made by `tfship.serving.balancer` (REST
and gRPC upstreams, retries on the next host, an access log with the upstream and its latency),
starts nginx as its own master process (pid file in conf_dir) and waits until it listens;
`stop()` ends it. `Balancer`/`reloader("pid:<conf_dir>/nginx.pid")` drive its upstreams.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness import PartUnavailable, apt_install
from tfship.serving.balancer import Backend, write_config

# Below Linux's ephemeral range (32768-60999): ports the kernel hands out for bind(0) and for
# outgoing connections (Spark, YARN and TensorFlow in tests running beside these) never land
# here, so a port stays ours while a container holding it is restarted.
TEST_PORTS = range(20000, 32000)


def free_port() -> int:
    """A loopback port nobody listens on right now, outside the kernel's ephemeral range."""
    for port in random.sample(TEST_PORTS, 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free loopback port in {TEST_PORTS}")


class NginxBalancer:
    """One nginx master on 127.0.0.1 with the project's balancer config."""

    def __init__(self, conf_dir: Path, backends: Sequence[Backend]) -> None:
        self.conf_dir = Path(conf_dir)
        self.backends = list(backends)
        self.rest_port, self.grpc_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The REST address clients use."""
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        """The gRPC address clients use."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def reload_spec(self) -> str:
        """What `tfship.serving.balancer.reloader` takes to reload this nginx."""
        return f"pid:{self.conf_dir}/nginx.pid"

    def start(self, timeout_s: float = 30.0) -> NginxBalancer:
        """Write the config, start nginx, wait until both ports accept connections."""
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            apt_install("nginx-light", part="nginx: not installed")
        write_config(
            self.conf_dir,
            self.backends,
            listen="127.0.0.1",
            rest_port=self.rest_port,
            grpc_port=self.grpc_port,
            user="root",
        )
        self.process = subprocess.Popen(
            [binary, "-p", str(self.conf_dir), "-c", str(self.conf_dir / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.conf_dir / "stderr.log", "wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        for port in (self.rest_port, self.grpc_port):
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if self.process.poll() is not None or time.monotonic() > deadline:
                    errors = (self.conf_dir / "stderr.log").read_text(errors="replace")
                    raise PartUnavailable(f"nginx did not start on 127.0.0.1:{port}: {errors[-2000:]}")
                time.sleep(0.1)
        return self

    def access_log(self) -> list[str]:
        """The access log's lines so far."""
        path = self.conf_dir / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def stop(self) -> None:
        """Stop nginx (its workers finish their requests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
