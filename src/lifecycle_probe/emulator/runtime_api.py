"""The Lambda Runtime, Extensions and Telemetry APIs of one environment, over HTTP/1.1.

Each environment has its own endpoint on 127.0.0.1 (``AWS_LAMBDA_RUNTIME_API``), as on
Lambda. This module only speaks HTTP and routes; the lifecycle decisions (when to
deliver, when to freeze) belong to the :class:`RuntimeApiBackend`, the environment.
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

__all__ = ["ACCEPTED", "Peer", "Reply", "RuntimeApiBackend", "RuntimeApiServer"]

RUNTIME_PREFIX = "/2018-06-01/runtime"
EXTENSION_PREFIX = "/2020-01-01/extension"
TELEMETRY_PATH = "/2022-07-01/telemetry"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
EXTENSION_NAME_HEADER = "Lambda-Extension-Name"
EXTENSION_ID_HEADER = "Lambda-Extension-Identifier"
EXTENSION_ERROR_TYPE_HEADER = "Lambda-Extension-Function-Error-Type"

_INVOCATION = re.compile(rf"^{RUNTIME_PREFIX}/invocation/(?P<id>[^/]+)/(?P<kind>response|error)$")


@dataclass
class Reply:
    """An HTTP reply from the backend."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
        """A reply whose body is ``payload`` as JSON."""
        return cls(status, json.dumps(payload).encode(), dict(headers or {}))

    @classmethod
    def error(cls, status: int, error_type: str, message: str) -> Reply:
        """A Lambda-style error reply (``{"errorMessage", "errorType"}``)."""
        return cls.json(status, {"errorMessage": message, "errorType": error_type})


ACCEPTED = Reply.json(202, {"status": "OK"})

Peer = tuple[str, int]
"""The caller's address on a Runtime API connection: ``(host, port)``."""


class RuntimeApiBackend(Protocol):
    """What an environment answers on its Runtime API and Extensions API."""

    def runtime_next(self, peer: Peer | None = None) -> Reply:
        """``GET /runtime/invocation/next``: block until an event is delivered.

        ``peer`` is the caller's address: under Lambda Managed Instances it tells which
        worker process is asking (see ``ManagedInstancesEnvironment``).
        """

    def runtime_response(self, request_id: str, body: bytes) -> Reply:
        """``POST /runtime/invocation/{id}/response``."""

    def runtime_error(self, request_id: str, error_type: str | None, body: bytes) -> Reply:
        """``POST /runtime/invocation/{id}/error``."""

    def runtime_init_error(self, error_type: str | None, body: bytes) -> Reply:
        """``POST /runtime/init/error``."""

    def runtime_restore_next(self) -> Reply:
        """``GET /runtime/restore/next``: block until the environment is restored."""

    def runtime_restore_error(self, error_type: str | None, body: bytes) -> Reply:
        """``POST /runtime/restore/error``."""

    def extension_register(self, name: str | None, body: bytes) -> Reply:
        """``POST /extension/register``."""

    def extension_next(self, extension_id: str | None) -> Reply:
        """``GET /extension/event/next``: block until the extension's next event."""

    def extension_error(
        self, extension_id: str | None, phase: str, error_type: str | None, body: bytes
    ) -> Reply:
        """``POST /extension/init/error`` or ``/extension/exit/error`` (``phase``)."""

    def telemetry_subscribe(self, extension_id: str | None, body: bytes) -> Reply:
        """``PUT /2022-07-01/telemetry``: subscribe an extension to telemetry events."""


def _route(
    backend: RuntimeApiBackend,
    method: str,
    path: str,
    headers: Any,
    body: bytes,
    peer: Peer | None = None,
) -> Reply:
    path = path.split("?", 1)[0]
    error_type = headers.get(ERROR_TYPE_HEADER)
    if method == "GET":
        if path == f"{RUNTIME_PREFIX}/invocation/next":
            return backend.runtime_next(peer)
        if path == f"{RUNTIME_PREFIX}/restore/next":
            return backend.runtime_restore_next()
        if path == f"{EXTENSION_PREFIX}/event/next":
            return backend.extension_next(headers.get(EXTENSION_ID_HEADER))
    elif method == "POST":
        match = _INVOCATION.match(path)
        if match:
            if match["kind"] == "response":
                return backend.runtime_response(match["id"], body)
            return backend.runtime_error(match["id"], error_type, body)
        if path == f"{RUNTIME_PREFIX}/init/error":
            return backend.runtime_init_error(error_type, body)
        if path == f"{RUNTIME_PREFIX}/restore/error":
            return backend.runtime_restore_error(error_type, body)
        if path == f"{EXTENSION_PREFIX}/register":
            return backend.extension_register(headers.get(EXTENSION_NAME_HEADER), body)
        if path in (f"{EXTENSION_PREFIX}/init/error", f"{EXTENSION_PREFIX}/exit/error"):
            return backend.extension_error(
                headers.get(EXTENSION_ID_HEADER),
                path.rsplit("/", 2)[1],
                headers.get(EXTENSION_ERROR_TYPE_HEADER),
                body,
            )
    elif method == "PUT" and path.rstrip("/") == TELEMETRY_PATH:
        return backend.telemetry_subscribe(headers.get(EXTENSION_ID_HEADER), body)
    return Reply.error(404, "InvalidRequest", f"no such endpoint: {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    # The Runtime Interface Client keeps its connection alive between calls: it needs
    # HTTP/1.1 with exact Content-Length on every reply.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits
    # for the client's delayed ACK (40 ms) on every warm invocation.
    disable_nagle_algorithm = True
    server: RuntimeApiServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, if any, end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        try:
            peer = (str(self.client_address[0]), int(self.client_address[1]))
            reply = _route(self.server.backend, method, self.path, self.headers, body, peer)
        except Exception as exc:  # a bug in the backend must not kill the endpoint silently
            reply = Reply.error(500, "Emulator.InternalError", f"{type(exc).__name__}: {exc}")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            # The runtime was killed (timeout, reap) while we answered: nothing to tell.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access log (it would flood the test output)."""


class RuntimeApiServer(ThreadingHTTPServer):
    """The HTTP endpoint of one environment, served from its own thread.

    ``start()`` begins serving; ``stop()`` stops accepting at once (no polling delay)
    and closes the listening socket. Requests in progress finish on their own daemon
    threads: the backend releases every blocking call when its environment ends.
    """

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, backend: RuntimeApiBackend) -> None:
        self.backend = backend
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="runtime-api", daemon=True)
        self._stopped = False
        self._stop_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can stall
        # for seconds without DNS; the address is known, so skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the value of ``AWS_LAMBDA_RUNTIME_API``."""
        return f"127.0.0.1:{self.server_port}"

    def start(self) -> None:
        """Start serving requests."""
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    self._accept_one()

    def _accept_one(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def stop(self) -> None:
        """Stop serving and release the port (idempotent, thread-safe)."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow per-connection errors: a killed runtime resets its connection."""
