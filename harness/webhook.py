"""A local webhook receiver on loopback that records every JSON body POSTed to it.

Tests start one on an ephemeral port; `python -m harness.webhook [--port 8799]` runs one in the
foreground for `make run` and prints what arrives.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """An HTTP server thread that keeps the POSTed JSON bodies in `received`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, echo: bool = False) -> None:
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw.decode("utf-8"))
                except ValueError:
                    self.send_error(400, "body is not JSON")
                    return
                with receiver._arrived:
                    receiver.received.append(body)
                    receiver.paths.append(self.path)
                    receiver._arrived.notify_all()
                if echo:
                    print(json.dumps(body, indent=2), flush=True)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # keeps the base class signature
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL to POST to."""
        return f"http://127.0.0.1:{self.port}"

    def connection_json(self) -> str:
        """This receiver as an Airflow HTTP connection in JSON form (for AIRFLOW_CONN_*)."""
        return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port, "schema": "http"})

    def start(self) -> WebhookReceiver:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """The bodies received so far, once at least `count` arrived (or the timeout passed)."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.received) >= count, timeout=timeout_s)
            return list(self.received)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    """Run a receiver in the foreground, printing every body it gets."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args(argv)
    receiver = WebhookReceiver(port=args.port, echo=True)
    print(f"webhook receiver listening on {receiver.url}", flush=True)
    try:
        receiver._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
