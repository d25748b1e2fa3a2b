"""The REST API: paths, HTTP status codes and `{"error": ...}` bodies over the ServingCore.

A thread per connection (keep-alive clients each hold one), a deep listen backlog and no Nagle
delay: the headers and body of an answer leave in one write.
"""

from __future__ import annotations

import json
import re
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving_standin.core import ServingCore
from serving_standin.models import ServingError, status_code
from serving_standin.tensors import metadata, predict

_ROUTE = re.compile(
    r"^/v1/models/(?P<model>[^/:]+)"
    r"(?:/versions/(?P<version>-?[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$"
)
HTTP_STATUS = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "DEADLINE_EXCEEDED": 504,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "UNIMPLEMENTED": 501,
}


def make_handler(core: ServingCore) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to the serving state."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real server's libevent front end
        server_version = "tfship-standin"

        def log_message(self, format: str, *args: Any) -> None:  # the base class signature
            pass

        def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            # One write for headers and body: two small writes meet Nagle and delayed ACKs (40 ms stalls).
            self._headers_buffer.append(b"\r\n" + body)
            self.flush_headers()

        def _error(self, code: str, message: str) -> None:
            self._send(HTTP_STATUS.get(code, 500), {"error": message})

        def _route(self) -> re.Match[str] | None:
            path = self.path.split("?", 1)[0]
            if not path.startswith("/v1/"):
                self._send(404, b"<html><body><h1>404 Not Found</h1></body></html>", "text/html")
                return None
            match = _ROUTE.match(path)
            if match is None:
                self._error("INVALID_ARGUMENT", f"Malformed request: {self.command} {path}")
            return match

        def do_GET(self) -> None:
            match = self._route()
            if match is None:
                return
            if match["tail"] not in (None, "/metadata"):
                self._error("INVALID_ARGUMENT", f"Malformed request: GET {self.path}")
                return
            try:
                version = int(match["version"]) if match["version"] else None
                if match["tail"] is None:
                    self._send(200, {"model_version_status": core.statuses(match["model"], version)})
                    return
                servable = core.resolve(match["model"], version, match["label"])
                self._send(200, metadata(match["model"], servable))
            except ServingError as err:
                self._error(err.code, err.message)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            match = self._route()
            if match is None:
                return
            if match["tail"] not in (":predict", ":classify", ":regress"):
                self._error("INVALID_ARGUMENT", f"Malformed request: POST {self.path}")
                return
            try:
                body = json.loads(raw.decode("utf-8"))
                if not isinstance(body, dict):
                    raise ValueError("the document root must be an object")
            except (ValueError, UnicodeDecodeError) as err:
                self._error("INVALID_ARGUMENT", f"JSON Parse error: {err}")
                return
            try:
                version = int(match["version"]) if match["version"] else None
                servable = core.resolve(match["model"], version, match["label"])
                if match["tail"] != ":predict":
                    raise ServingError("UNIMPLEMENTED", f"{match['tail'][1:]} is not served by the stand-in")
                self._send(200, core.run_predict(lambda: predict(servable, body)))
            except ServingError as err:
                self._error(err.code, err.message)
            except Exception as err:  # noqa: BLE001 - TensorFlow's own errors carry their status code
                self._error(status_code(err), getattr(err, "message", None) or str(err))

    return Handler


class RestServer(ThreadingHTTPServer):
    """A thread per connection; a listen backlog for bursts of clients (the default of 5 drops SYNs)."""

    daemon_threads = True  # handler threads never hold up exit
    request_queue_size = 1024

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def make_server(port: int, core: ServingCore) -> RestServer:
    """The REST server on every interface."""
    return RestServer(("0.0.0.0", port), make_handler(core))
