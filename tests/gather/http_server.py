"""A real HTTP server on 127.0.0.1 for the gather tests: serves given bytes per path,
answers 404 for the rest, can delay a path past the client's timeout, records every
request, and can hold requests at a gate (to interrupt a download midway)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ImageServer:
    def __init__(self):
        self.routes: dict[str, tuple[bytes, str, float]] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.gate = None  # callable(path) -> bool: hold this request until `release` is set
        self.held = threading.Event()
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with server._lock:
                    server.requests.append(self.path)
                if server.gate is not None and server.gate(self.path):
                    server.held.set()
                    server.release.wait(60)
                route = server.routes.get(self.path)
                try:
                    if route is None:
                        self.send_error(404, "Not Found")
                        return
                    body, content_type, delay = route
                    if delay:
                        time.sleep(delay)
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout, or the download was stopped)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def add(self, path: str, body: bytes, content_type: str = "image/png", delay: float = 0.0) -> str:
        self.routes[path] = (body, content_type, delay)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def counts(self) -> Counter:
        with self._lock:
            return Counter(self.requests)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def closed_port_url(path: str = "/gone.png") -> str:
    """A URL on a port nothing listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
