"""Start and stop the real parts (HDFS, Docker engine, Spark) on loopback, for tests and by hand."""

from __future__ import annotations


class PartUnavailable(RuntimeError):
    """A real part could not start; the message says which and why."""
