"""Fixtures for publication tests: serving targets, a webhook receiver, dead and stalled endpoints."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.webhook import WebhookReceiver


@pytest.fixture
def serving_dir(tmp_path: Path) -> Path:
    """A serving host's TF Serving base path for the model (absent until the first publication)."""
    return tmp_path / "serving-a" / "models" / "mnist"


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    """A local receiver, and the alert connection pointed at it."""
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TFSHIP_ALERT_WEBHOOK", receiver.connection_json())
        yield receiver


@pytest.fixture
def dead_endpoint() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class StalledServer:
    """A loopback TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                connection, _ = self._listener.accept()
                self.accepted.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.accepted:
            connection.close()
        self._listener.close()


@pytest.fixture
def stalled_server() -> Iterator[StalledServer]:
    server = StalledServer()
    yield server
    server.close()
