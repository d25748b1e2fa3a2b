"""Start and stop the real parts (HDFS, Docker engine, Spark) on loopback, for tests and by hand."""

from __future__ import annotations

import os
import subprocess


class PartUnavailable(RuntimeError):
    """A real part could not start; the message says which and why."""


def apt_install(package: str, *, part: str, error: type[Exception] = PartUnavailable) -> None:
    """Install one Debian package for `part`, or raise `error` saying why (not root, apt failed)."""
    if os.geteuid() != 0:
        raise error(f"{part}: {package} is missing and installing it needs root: apt-get install {package}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise error(f"{part}: {' '.join(command)} failed: {done.stderr[-1500:]}")
