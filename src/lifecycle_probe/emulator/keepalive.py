"""A real HTTP/1.1 keep-alive service on 127.0.0.1, on threads: a function's dependency
behind a load balancer, for the demo's and the tests' stale connections.

Its handler closes a connection idle longer than the server's idle timeout (a load
balancer's idle cut-off), or closes one right after reading a request, before answering
it (a drop no check can see): the next ``drop_next`` requests, or any request that comes
on a connection idle longer than ``drop_idle_s`` (a server that keeps idle sockets open
but has forgotten them, as after a failover). Every reply carries ``X-Connection``: the
number of the connection it came on (1 for the first the server accepted), so that a
client can tell a reused connection from a new one.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["CONNECTION_HEADER", "Server"]

CONNECTION_HEADER = "X-Connection"


class Server:
    """A keep-alive HTTP/1.1 server; ``drop_next`` requests are read and left unanswered,
    and so is, with ``drop_idle_s``, a request on a connection idle longer than that since
    its previous reply (never a connection's first request).

    Every answered request gets ``200`` with ``body`` (and ``content_type``, if given).
    """

    def __init__(
        self,
        idle_timeout_s: float,
        *,
        body: bytes = b"ok",
        content_type: str | None = None,
        drop_idle_s: float | None = None,
    ) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body apart: no 40 ms delayed ACK
            timeout = idle_timeout_s  # an idle keep-alive connection is closed after it
            number = 0
            replied_at: float | None = None  # monotonic time of the last reply

            def setup(self) -> None:
                super().setup()
                with server.lock:
                    server.accepted += 1
                    self.number = server.accepted

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._answer()

            def _answer(self) -> None:
                idle_s = None if self.replied_at is None else time.monotonic() - self.replied_at
                with server.lock:
                    drop = server.drop_next > 0
                    server.drop_next -= drop
                    if not drop and drop_idle_s is not None and idle_s is not None:
                        drop = idle_s > drop_idle_s
                    server.dropped += drop
                if drop:
                    self.close_connection = True  # closed without a reply
                    return
                self.send_response(200)
                if content_type is not None:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header(CONNECTION_HEADER, str(self.number))
                if self.path.startswith("/close"):
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)
                self.replied_at = time.monotonic()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.lock = threading.Lock()
        self.accepted = 0
        self.drop_next = 0
        self.dropped = 0  # requests read and left unanswered
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
