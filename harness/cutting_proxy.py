"""A WebHDFS proxy on loopback that cuts a file's connection after N bytes: a network fault made for real.

It forwards every request to the NameNode's WebHDFS address and rewrites the DataNode redirects
of `op=OPEN` to come back through itself, so it sees the data. The first `cuts` reads whose path
ends with `cut_suffix` send `cut_after` bytes of the body and then drop the connection mid-body.
Every OPEN it forwards is recorded (path and offset), so a test can see where a reader resumed.
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_DATANODE_PREFIX = "/__dn/"
_CHUNK = 64 * 1024


class CuttingProxy:
    """Forwarding with one fault: see the module docstring. Use as a context manager."""

    def __init__(self, webhdfs_url: str, *, cut_suffix: str, cut_after: int, cuts: int = 1) -> None:
        self.target = urlsplit(webhdfs_url).netloc
        self.cut_suffix, self.cut_after, self.cuts_left = cut_suffix, cut_after, cuts
        self.opens: list[tuple[str, int]] = []  # (path, offset) of every OPEN that reached a DataNode
        self.cut: list[tuple[str, int]] = []  # (path, bytes sent) of every connection it dropped
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's WebHDFS address."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take_cut(self, path: str) -> bool:
        with self._lock:
            if self.cuts_left > 0 and path.endswith(self.cut_suffix):
                self.cuts_left -= 1
                return True
            return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # the base class signature
                pass

            def do_GET(self) -> None:
                target, path = proxy.target, self.path
                if path.startswith(_DATANODE_PREFIX):
                    target, _, rest = path.removeprefix(_DATANODE_PREFIX).partition("/")
                    path = "/" + rest
                upstream = http.client.HTTPConnection(target, timeout=60)
                upstream.request("GET", path, headers={"Accept-Encoding": "identity"})
                answer = upstream.getresponse()
                hop = ("connection", "keep-alive", "transfer-encoding")
                headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in hop]
                chunked = answer.getheader("Content-Length") is None  # re-chunk: a cut must show as one
                location = answer.getheader("Location")
                if location:  # a DataNode redirect: send it back through us
                    parts = urlsplit(location)
                    rewritten = f"{proxy.url}{_DATANODE_PREFIX}{parts.netloc}{parts.path}?{parts.query}"
                    headers = [(k, rewritten if k.lower() == "location" else v) for k, v in headers]
                query = parse_qs(urlsplit(path).query)
                is_data = target != proxy.target and query.get("op") == ["OPEN"]
                if is_data:
                    file_path = urlsplit(path).path
                    with proxy._lock:
                        proxy.opens.append((file_path, int((query.get("offset") or ["0"])[0])))
                cut = is_data and proxy._take_cut(urlsplit(path).path)
                self.send_response(answer.status)
                for key, value in headers:
                    self.send_header(key, value)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                while chunk := answer.read(_CHUNK):
                    if cut and sent + len(chunk) >= proxy.cut_after:
                        self._write(chunk[: proxy.cut_after - sent], chunked)
                        self.wfile.flush()
                        with proxy._lock:
                            proxy.cut.append((urlsplit(path).path, proxy.cut_after))
                        # Mid-body: the reader sees the connection end before Content-Length.
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        upstream.close()
                        return
                    self._write(chunk, chunked)
                    sent += len(chunk)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                upstream.close()

            def _write(self, data: bytes, chunked: bool) -> None:
                if chunked and data:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                elif data:
                    self.wfile.write(data)

        return Handler
