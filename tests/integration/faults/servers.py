"""Collectors that misbehave on purpose: small OTLP/HTTP servers for the fault matrix.

One :class:`FaultCollector` listens on 127.0.0.1 and answers each request according to
its ``mode``, which a test may switch at any time:

- ``ok``: 200 with an empty OTLP JSON answer, and the request is kept;
- ``status:N``: answers HTTP N (``status:500``, ``status:429`` with ``Retry-After: 1``);
- ``slow``: reads the request, keeps it, answers 200 only after ``delay_s``;
- ``hang``: reads the request and never answers (the connection stays open);
- ``reset``: reads the request's head and resets the connection (TCP RST) mid-request.

:meth:`FaultCollector.stop` closes the port and every connection (a collector that has
gone: connections are refused); :meth:`FaultCollector.start` listens again on the same
port. Every request body the collector read in full is kept in ``received`` (path, parsed
JSON), answered or not: what reached the collector.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from typing import Any

from tests.integration.probe.otlp import attributes


class FaultCollector:
    def __init__(self, mode: str = "ok", delay_s: float = 1.0, port: int = 0) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.port = port
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._stopped = threading.Event()

    # -- life -------------------------------------------------------------------------------

    def start(self) -> FaultCollector:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Gone: the port is closed and every open connection too."""
        self._stopped.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            # close() alone leaves the port listening while the accept thread is blocked
            # in accept() (it holds the socket until a connection wakes it): a client that
            # backs off would find the port still taken when the test starts it again.
            # shutdown() wakes that accept at once.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def endpoint(self, signal: str, secret: str | None = None) -> str:
        """``http://127.0.0.1:PORT/v1/{signal}``, with ``?api_key=SECRET`` when given."""
        url = f"http://127.0.0.1:{self.port}/v1/{signal}"
        return f"{url}?api_key={secret}" if secret else url

    def env(self, secret: str | None = None) -> dict[str, str]:
        """The function's variables that point the probe's ``otlp`` exporter here."""
        return {
            "LIFECYCLE_PROBE_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint("traces", secret),
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": self.endpoint("metrics", secret),
        }

    # -- serving ----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while not self._stopped.is_set():
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                path = request_line.split(" ")[1].split("?")[0]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in header_lines)
                }
                with self._lock:
                    self.requests += 1
                mode = self.mode
                if mode == "reset":
                    # RST instead of FIN: the client sees ECONNRESET mid-request.
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                body, buffer = buffer[:length], buffer[length:]
                if mode in ("ok", "slow", "hang"):
                    with self._lock:
                        self.received.append((path, json.loads(body)))
                if mode == "hang":
                    self._stopped.wait()
                    return
                if mode == "slow" and self._stopped.wait(self.delay_s):
                    return
                status, extra = 200, b""
                if mode.startswith("status:"):
                    status = int(mode.split(":", 1)[1])
                    if status == 429:
                        extra = b"Retry-After: 1\r\n"
                payload = b"{}"
                conn.sendall(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n".encode()
                    + extra
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    # -- what arrived -----------------------------------------------------------------------

    def spans(self) -> list[dict[str, Any]]:
        """Every span received, with ``attrs``; duplicates (resent exports) included."""
        found = []
        with self._lock:
            bodies = [body for path, body in self.received if path == "/v1/traces"]
        for body in bodies:
            for resource_spans in body.get("resourceSpans", []):
                for scope in resource_spans.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        found.append({**span, "attrs": attributes(span)})
        return found

    def points(self) -> list[dict[str, Any]]:
        """Every metric data point received, deduplicated by (metric, attributes, interval):
        a resent export carries the same points, which a backend can drop."""
        unique: dict[tuple[Any, ...], dict[str, Any]] = {}
        with self._lock:
            bodies = [body for path, body in self.received if path == "/v1/metrics"]
        for body in bodies:
            for resource_metrics in body.get("resourceMetrics", []):
                for scope in resource_metrics.get("scopeMetrics", []):
                    for metric in scope.get("metrics", []):
                        for kind in ("sum", "histogram", "gauge"):
                            for point in metric.get(kind, {}).get("dataPoints", []):
                                attrs = attributes(point)
                                key = (
                                    metric["name"],
                                    tuple(sorted(attrs.items())),
                                    point.get("startTimeUnixNano"),
                                    point.get("timeUnixNano"),
                                )
                                unique[key] = {**point, "metric": metric["name"], "attrs": attrs}
        return list(unique.values())

    def invocation_ids(self) -> set[str]:
        """Request ids of the invocation spans received."""
        return {
            s["attrs"]["faas.invocation_id"]
            for s in self.spans()
            if "faas.invocation_id" in s["attrs"]
        }

    def total(self, metric: str, **attrs: Any) -> int:
        """Sum of a counter's (deduplicated) points whose attributes include ``attrs``."""
        return sum(
            int(p.get("asInt", 0))
            for p in self.points()
            if p["metric"] == metric and all(p["attrs"].get(k) == v for k, v in attrs.items())
        )

    def wait_for(self, predicate, timeout_s: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return bool(predicate())


def free_port() -> int:
    """A port nothing listens on (a collector that is not there: connections refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
