"""nginx in front of the serving hosts: its configuration made from the host list, and draining one host.

The whole config (`render_nginx_conf`) is written once where nginx starts (the harness, the stack);
the upstream blocks live in their own file (`upstreams.conf`, included), which `Balancer` rewrites
to take a host out (`down`) or put it back, then asks nginx to reload. A reload is graceful: new
requests go by the new upstreams while the old workers finish the requests they hold.

Retrying a predict on another host: nginx never retries a non-idempotent request (POST) unless told
to. A TF Serving predict has no side effect, so sending it again to another host is safe, and it is
what keeps clients from seeing a host that is being drained or has died: `non_idempotent` is on.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.errors import ConfigError, TfshipError

UPSTREAMS_FILE = "upstreams.conf"
STATE_FILE = "drained.json"
REST_UPSTREAM = "tfship_rest"
GRPC_UPSTREAM = "tfship_grpc"
# One line per request: who answered and how long it took (upstream and whole request).
LOG_FORMAT = (
    '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
    "upstream=$upstream_addr upstream_status=$upstream_status upstream_time=$upstream_response_time "
    "request_time=$request_time"
)


class BalancerError(TfshipError):
    """The load balancer could not be changed or reloaded; the message says which file or signal failed."""


@dataclass(frozen=True)
class Backend:
    """One serving host as nginx sees it."""

    name: str
    address: str
    rest_port: int
    grpc_port: int

    @classmethod
    def from_host(cls, host: Any) -> Backend:
        """The backend of a configured serving host (`tfship.config.ServingHost`)."""
        return cls(host.name, host.address, host.rest_port, host.grpc_port)


def render_upstreams(backends: Sequence[Backend], drained: Sequence[str] = ()) -> str:
    """The REST and gRPC upstream blocks; a drained host is `down` (no new requests)."""
    if not backends:
        raise ConfigError("a load balancer needs at least one serving host")
    blocks = []
    for upstream, port in ((REST_UPSTREAM, "rest_port"), (GRPC_UPSTREAM, "grpc_port")):
        lines = [
            f"    server {b.address}:{getattr(b, port)} max_fails=0{' down' if b.name in drained else ''};  # {b.name}"
            for b in backends
        ]
        servers = "\n".join(lines) + "\n"
        blocks.append(f"upstream {upstream} {{\n{servers}    keepalive 64;\n}}\n")
    return "".join(blocks)


def render_nginx_conf(
    *, conf_dir: str, listen: str, rest_port: int, grpc_port: int, user: str | None = None, workers: int = 1
) -> str:
    """A whole nginx.conf: REST on `listen:rest_port`, gRPC (HTTP/2) on `listen:grpc_port`, upstreams included."""
    user_line = f"user {user};\n" if user else ""
    return f"""{user_line}worker_processes {workers};
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format tfship '{LOG_FORMAT}';
    access_log {conf_dir}/access.log tfship;
    client_body_temp_path {conf_dir}/tmp/body;
    proxy_temp_path {conf_dir}/tmp/proxy;
    fastcgi_temp_path {conf_dir}/tmp/fastcgi;
    uwsgi_temp_path {conf_dir}/tmp/uwsgi;
    scgi_temp_path {conf_dir}/tmp/scgi;
    client_max_body_size 64m;
    include {conf_dir}/{UPSTREAMS_FILE};
    server {{
        listen {listen}:{rest_port};
        location / {{
            proxy_pass http://{REST_UPSTREAM};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
    server {{
        listen {listen}:{grpc_port} http2;
        location / {{
            grpc_pass grpc://{GRPC_UPSTREAM};
            grpc_connect_timeout 2s;
            grpc_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
            grpc_next_upstream_tries 3;
        }}
    }}
}}
"""


def reloader(spec: str) -> Callable[[], None]:
    """How nginx reloads: "pid:<pid file>" (SIGHUP to its master) or "docker:<container>" (the same via Docker)."""
    kind, _, target = spec.partition(":")
    if kind == "pid" and target:

        def by_pid() -> None:
            try:
                os.kill(int(Path(target).read_text().strip()), signal.SIGHUP)
            except (OSError, ValueError) as err:
                raise BalancerError(f"cannot signal nginx through {target}: {err}") from None

        return by_pid
    if kind == "docker" and target:

        def by_docker() -> None:
            import docker

            client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
            try:
                client.api.kill(target, signal="SIGHUP")
            except Exception as err:  # noqa: BLE001 - any engine error means the reload did not happen
                raise BalancerError(f"cannot reload nginx container {target!r}: {err}") from None
            finally:
                client.close()

        return by_docker
    raise ConfigError(f"balancer reload {spec!r} must be pid:<pid file> or docker:<container>")


class Balancer:
    """The upstreams nginx includes, and which hosts are out of them right now."""

    def __init__(self, conf_dir: str | os.PathLike[str], backends: Sequence[Backend], reload: Callable[[], None]):
        self.conf_dir = Path(conf_dir)
        self.backends = list(backends)
        self.reload = reload

    def drained(self) -> list[str]:
        """The hosts taken out, as recorded next to the upstreams."""
        path = self.conf_dir / STATE_FILE
        return sorted(json.loads(path.read_text())) if path.exists() else []

    def _write(self, drained: list[str]) -> None:
        for name, text in (
            (UPSTREAMS_FILE, render_upstreams(self.backends, drained)),
            (STATE_FILE, json.dumps(drained)),
        ):
            temp = self.conf_dir / f".{name}.tmp"
            temp.write_text(text)
            os.replace(temp, self.conf_dir / name)
        self.reload()

    def drain(self, host: str) -> bool:
        """Take `host` out of rotation; False (and nothing changed) when it is the only host still in."""
        if host not in {b.name for b in self.backends}:
            raise ConfigError(f"host {host!r} is not behind this balancer ({[b.name for b in self.backends]})")
        drained = set(self.drained())
        if not ({b.name for b in self.backends} - drained - {host}):
            return False  # taking the last host out would leave clients with nothing
        self._write(sorted(drained | {host}))
        return True

    def restore(self, host: str) -> None:
        """Put `host` back into rotation."""
        self._write(sorted(set(self.drained()) - {host}))


def write_config(
    conf_dir: str | os.PathLike[str],
    backends: Sequence[Backend],
    *,
    listen: str,
    rest_port: int,
    grpc_port: int,
    user: str | None = None,
) -> Path:
    """nginx.conf and the upstreams (every host in) under `conf_dir`, where nginx starts; returns nginx.conf.

    Hosts a release drained stay drained: a restart of the writer must not put a host back mid-release.
    """
    directory = Path(conf_dir)
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(
        render_nginx_conf(conf_dir=str(directory), listen=listen, rest_port=rest_port, grpc_port=grpc_port, user=user)
    )
    state = directory / STATE_FILE
    drained = json.loads(state.read_text()) if state.exists() else []
    (directory / UPSTREAMS_FILE).write_text(render_upstreams(backends, drained))
    return conf


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tfship.serving.balancer CONF_DIR`: nginx's config for the configured serving hosts."""
    import argparse

    from tfship.config import Settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("conf_dir")
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--rest-port", type=int, default=8501)
    parser.add_argument("--grpc-port", type=int, default=8500)
    parser.add_argument("--user", default=None, help="the user nginx's workers run as (nginx started as root)")
    args = parser.parse_args(argv)
    hosts = Settings.from_env().serving_hosts
    backends = [Backend.from_host(h) for h in hosts]
    conf = write_config(
        args.conf_dir, backends, listen=args.listen, rest_port=args.rest_port, grpc_port=args.grpc_port, user=args.user
    )
    print(f"{conf}: {', '.join(f'{b.name} at {b.address}:{b.rest_port}' for b in backends)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
