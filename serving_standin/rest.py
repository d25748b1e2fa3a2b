"""The REST API: paths, HTTP status codes and `{"error": ...}` bodies over a ServingState."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving_standin.models import ServingError, ServingState, status_code
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


def make_handler(state: ServingState) -> type[BaseHTTPRequestHandler]:
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
            self.end_headers()
            self.wfile.write(body)

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
                    manager = state.manager(match["model"], for_status=True)
                    self._send(200, {"model_version_status": manager.statuses(version)})
                    return
                manager = state.manager(match["model"], for_status=False)
                servable = manager.resolve(version, match["label"], state.allow_unavailable_labels)
                self._send(200, metadata(manager.name, servable))
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
                manager = state.manager(match["model"], for_status=False)
                version = int(match["version"]) if match["version"] else None
                servable = manager.resolve(version, match["label"], state.allow_unavailable_labels)
                if match["tail"] != ":predict":
                    raise ServingError("UNIMPLEMENTED", f"{match['tail'][1:]} is not served by the stand-in")
                self._send(200, predict(servable, body))
            except ServingError as err:
                self._error(err.code, err.message)
            except Exception as err:  # noqa: BLE001 - TensorFlow's own errors carry their status code
                self._error(status_code(err), getattr(err, "message", None) or str(err))

    return Handler


def make_server(port: int, state: ServingState) -> ThreadingHTTPServer:
    """The REST server on every interface; handler threads never hold up exit."""
    server = ThreadingHTTPServer(("0.0.0.0", port), make_handler(state))
    server.daemon_threads = True
    return server
