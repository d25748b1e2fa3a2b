"""A Docker engine to talk to: the one at DOCKER_HOST or the default socket, else a local dockerd.

Where no engine answers, Debian's docker.io is installed if needed and started with
`--storage-driver=vfs --iptables=false --bridge=none` (no bridge here: containers use the
host network). `python -m harness.docker_engine up` does the same by hand.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from harness import PartUnavailable, apt_install

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
STATE_DIR = PROJECT_ROOT / "var" / "docker"
BUSYBOX_IMAGE = "tfship/busybox:local"


def _answers(base_url: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=base_url, version="auto", timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not this one"
        return False


def _install_dockerd() -> None:
    if not shutil.which("dockerd"):
        apt_install("docker.io", part="Docker: no engine answers and dockerd is missing")


def ensure_engine(timeout_s: float = 60.0) -> str:
    """Return the base URL of an engine that answers, starting dockerd if none does."""
    candidates = [os.environ["DOCKER_HOST"]] if os.environ.get("DOCKER_HOST") else []
    candidates.append(DEFAULT_SOCKET)
    for base_url in candidates:
        if _answers(base_url):
            return base_url
    _install_dockerd()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log_path = STATE_DIR / "dockerd.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            ["dockerd", "--storage-driver=vfs", "--iptables=false", "--bridge=none", "-H", DEFAULT_SOCKET],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (STATE_DIR / "dockerd.pid").write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while not _answers(DEFAULT_SOCKET):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise PartUnavailable(f"Docker: dockerd did not start (exit {process.poll()}):\n{tail}")
        time.sleep(0.5)
    return DEFAULT_SOCKET


def ensure_busybox_image(base_url: str) -> str:
    """A tiny image made here from the static busybox binary (no registry is reachable)."""
    import docker

    client = docker.APIClient(base_url=base_url, version="auto")
    if client.images(name=BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        raise PartUnavailable("Docker: /bin/busybox is missing (apt-get install busybox-static)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "echo", "cat", "ls", "sleep", "wget", "env", "true"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for directory in ("tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
    repository, tag = BUSYBOX_IMAGE.split(":")
    client.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)
    return BUSYBOX_IMAGE


def main(argv: list[str]) -> int:
    """`up`: make sure an engine answers and print its address."""
    base_url = ensure_engine()
    print(base_url)
    if argv[:1] == ["up"]:
        print(ensure_busybox_image(base_url))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
