"""Lambda's own figures for each invocation, from the Lambda Telemetry API.

Lambda measures what the probe cannot see from inside the runtime: the billed duration,
the peak memory, the INIT of a SnapStart function (done before the snapshot) and the
restore. It reports them to extensions that subscribe to the Telemetry API. Given the
id of the probe's registered extension, :func:`start` opens a small HTTP listener in
the runtime process, subscribes it to ``platform`` events only, with the smallest buffer
Lambda allows, and keeps, per request id, one immutable :class:`PlatformFigures`:

* ``platform.report`` gives ``durationMs``, ``billedDurationMs``, ``maxMemoryUsedMB``
  and, after an on-demand INIT, ``initDurationMs`` (after a restore,
  ``restoreDurationMs``);
* ``platform.initReport`` and ``platform.restoreReport`` give the INIT's and the
  restore's ``durationMs``; each is attached to the next request's figures when its
  report does not carry it (a restored environment's INIT ran before the snapshot).

Lambda sends an invocation's report once it is over, often during the next invocation
(events are not sent while the environment is frozen): :meth:`TelemetrySubscriber.
take_pending` hands over whatever has arrived, for the next export.

Fail open: nothing here raises into the caller; the listener is one daemon thread, which
never keeps the process from exiting and serves every connection itself (Lambda sends one
batch at a time; the local Lambda opens a connection per batch: a thread per connection
would be a thread per invocation); the store holds at most ``limit`` requests;
outside Lambda (no Runtime API address, no extension id) nothing is started. No payload
reaches this module: platform events carry request ids, statuses and durations.

The destination host is ``sandbox.localdomain``, as AWS documents for the Telemetry
API; the listener binds to the address ``/etc/hosts`` gives that name (read directly: a
DNS lookup could stall INIT), else to 127.0.0.1 (the local Lambda maps the name there).
HTTP is spoken over the ``_socket`` module: ``http.server`` and ``http.client`` would
add several milliseconds of imports to INIT.
"""

from __future__ import annotations

import _socket
import json
import math
import os
import threading

from lifecycle_probe._safe import report_failure, start_daemon_thread
from lifecycle_probe.probe_threads import mark_probe_thread

# The model's record: sinks read the figures without importing this module.
from lifecycle_probe.records import PlatformFigures

# ``typing``, ``dataclasses`` and ``collections`` cost milliseconds to import at INIT; the
# runtime client has imported ``json`` and ``threading`` already.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PlatformFigures", "TelemetrySubscriber", "start"]

SANDBOX_HOST = "sandbox.localdomain"
TELEMETRY_PATH = "/2022-07-01/telemetry"
SCHEMA_VERSION = "2022-12-13"
# The least Lambda accepts: one small batch, sent at most 25 ms after its first event.
BUFFERING = {"maxItems": 1000, "maxBytes": 262_144, "timeoutMs": 25}
# Requests whose figures are kept (the store and the pending queue are bounded by it).
DEFAULT_LIMIT = 64
# One request from Lambda may not exceed this (maxBytes above, plus headers and slack).
_MAX_REQUEST_BYTES = 1_048_576
_MAX_HEADER_BYTES = 16_384
# Connections waiting to be served (the listen backlog); Lambda sends one batch at a time.
_BACKLOG = 4
# A connection is served until its peer closes it, or until it has sat idle this long
# between requests (a kept-alive connection): a connection opened meanwhile waits at most
# this, and a freeze in between only makes the wait end at the thaw.
_IDLE_S = 0.25
# The subscription is made during INIT: it must answer quickly or be given up.
_SUBSCRIBE_TIMEOUT_S = 1.0
_MAX_REQUEST_ID = 128


def _number(value: object) -> float | None:
    """A finite, non-negative figure, else None (the sender is trusted for nothing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _whole(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


class TelemetrySubscriber:
    """The received figures, per request id; fed by the listener (or by :meth:`receive`)."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = max(1, limit)
        self._cond = threading.Condition()
        self._figures: dict[str, PlatformFigures] = {}  # oldest first
        self._pending: list[PlatformFigures] = []
        # INIT and restore durations reported on their own, for the next request.
        self._init_ms: float | None = None
        self._restore_ms: float | None = None
        self._listener: Any = None  # the listening _socket.socket, once started
        self.address: tuple[str, int] | None = None  # where the listener listens

    # -- what the export asks ------------------------------------------------------------

    def figures_for(self, request_id: str) -> PlatformFigures | None:
        """The figures Lambda reported for ``request_id``, if they have arrived."""
        with self._cond:
            return self._figures.get(request_id)

    def take_pending(self) -> tuple[PlatformFigures, ...]:
        """The figures that arrived since the last call, oldest first."""
        with self._cond:
            pending = tuple(self._pending)
            self._pending = []
            return pending

    def wait_for(self, request_id: str, timeout_s: float) -> PlatformFigures | None:
        """The figures of ``request_id``, waiting at most ``timeout_s`` for them."""
        with self._cond:
            self._cond.wait_for(lambda: request_id in self._figures, max(0.0, timeout_s))
            return self._figures.get(request_id)

    # -- what Lambda sends ---------------------------------------------------------------

    def receive(self, events: object) -> None:
        """Take one batch of Telemetry API events (a JSON array, decoded). Never raises."""
        try:
            if not isinstance(events, list):
                return
            with self._cond:
                for event in events:
                    if isinstance(event, dict) and isinstance(event.get("record"), dict):
                        self._receive_locked(str(event.get("type")), event["record"])
                self._cond.notify_all()
        except Exception as exc:
            report_failure("the Telemetry API listener", exc)

    def _receive_locked(self, event_type: str, record: dict[str, Any]) -> None:
        metrics = record.get("metrics")
        if not isinstance(metrics, dict):
            return
        if event_type == "platform.initReport":
            self._init_ms = _number(metrics.get("durationMs"))
        elif event_type == "platform.restoreReport":
            self._restore_ms = _number(metrics.get("durationMs"))
        elif event_type == "platform.report":
            request_id = record.get("requestId")
            if not isinstance(request_id, str) or not 0 < len(request_id) <= _MAX_REQUEST_ID:
                return
            init_ms = _number(metrics.get("initDurationMs"))
            restore_ms = _number(metrics.get("restoreDurationMs"))
            figures = PlatformFigures(
                request_id=request_id,
                duration_ms=_number(metrics.get("durationMs")),
                billed_duration_ms=_whole(metrics.get("billedDurationMs")),
                max_memory_used_mb=_whole(metrics.get("maxMemoryUsedMB")),
                init_duration_ms=init_ms if init_ms is not None else self._init_ms,
                restore_duration_ms=restore_ms if restore_ms is not None else self._restore_ms,
            )
            # Each INIT and restore belongs to the first request after it only.
            self._init_ms = self._restore_ms = None
            self._figures.pop(request_id, None)  # a repeated report counts as the newest
            self._figures[request_id] = figures
            while len(self._figures) > self._limit:
                del self._figures[next(iter(self._figures))]
            self._pending.append(figures)
            del self._pending[: -self._limit]

    # -- the listener --------------------------------------------------------------------

    def listen(self, bind_address: str) -> tuple[str, int]:
        """Listen on ``bind_address`` (an IPv4 address), on a port the system picks."""
        listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        try:
            listener.bind((bind_address, 0))
            listener.listen(_BACKLOG)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.address = (bind_address, listener.getsockname()[1])
        start_daemon_thread(self._accept, "lifecycle-probe-telemetry")
        return self.address

    def close(self) -> None:
        """Stop listening (the accepting thread ends). Idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()

    def _accept(self) -> None:
        mark_probe_thread()
        try:
            self._accept_loop()
        except Exception as exc:
            report_failure("the Telemetry API listener", exc)

    def _accept_loop(self) -> None:
        while (listener := self._listener) is not None:
            try:
                # What socket.socket.accept does, without importing socket.py.
                fd, _ = listener._accept()
            except OSError:
                return  # closed
            connection = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, 0, fd)
            self._serve(connection)

    def _serve(self, connection: Any) -> None:
        try:
            connection.settimeout(_IDLE_S)
            buffered = b""
            while True:
                request = _read_request(connection, buffered)
                if request is None:
                    return
                body, buffered, keep_alive = request
                try:
                    events = json.loads(body)
                except ValueError:
                    events = None
                self.receive(events)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                    + (b"" if keep_alive else b"Connection: close\r\n")
                    + b"\r\n"
                )
                if not keep_alive:
                    return
        except OSError:  # the peer went, or sat idle (TimeoutError): the next connection
            return
        except Exception as exc:
            report_failure("the Telemetry API listener", exc)
        finally:
            connection.close()


def _read_request(connection: Any, buffered: bytes) -> tuple[bytes, bytes, bool] | None:
    """One HTTP/1.1 request's body, what followed it, and whether to keep the connection.

    None when the peer closed, or sent something this listener does not take (no
    ``Content-Length``, too large): then the connection is dropped.
    """
    data = buffered
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEADER_BYTES:
            return None
        chunk = connection.recv(65_536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    try:
        length = int(headers.get("content-length", ""))
    except ValueError:
        return None
    if not 0 <= length <= _MAX_REQUEST_BYTES:
        return None
    while len(rest) < length:
        chunk = connection.recv(min(65_536, length - len(rest)))
        if not chunk:
            return None
        rest += chunk
    keep_alive = headers.get("connection") != "close" and lines[0].endswith("HTTP/1.1")
    return rest[:length], rest[length:], keep_alive


def sandbox_address(hosts_file: str = "/etc/hosts") -> str | None:
    """The IPv4 address ``/etc/hosts`` gives ``sandbox.localdomain``, if any."""
    try:
        with open(hosts_file, encoding="utf-8", errors="replace") as hosts:
            text = hosts.read(65_536)
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and SANDBOX_HOST in fields[1:] and fields[0].count(".") == 3:
            return fields[0]
    return None


def _subscribe(runtime_api: str, extension_id: str, port: int) -> int:
    """PUT the subscription; the HTTP status Lambda answered with."""
    body = json.dumps(
        {
            "schemaVersion": SCHEMA_VERSION,
            "destination": {"protocol": "HTTP", "URI": f"http://{SANDBOX_HOST}:{port}/"},
            "types": ["platform"],
            "buffering": BUFFERING,
        }
    ).encode()
    request = (
        f"PUT {TELEMETRY_PATH} HTTP/1.1\r\nHost: {runtime_api}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nLambda-Extension-Identifier: {extension_id}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body
    host, _, api_port = runtime_api.rpartition(":")
    connection = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        connection.settimeout(_SUBSCRIBE_TIMEOUT_S)
        connection.connect((host or "127.0.0.1", int(api_port)))
        connection.sendall(request)
        reply = b""
        while b"\r\n" not in reply and len(reply) < 1024:
            chunk = connection.recv(1024)
            if not chunk:
                break
            reply += chunk
    finally:
        connection.close()
    # "HTTP/1.1 200 OK"
    return int(reply.split(b" ", 2)[1])


def start(
    extension_id: str | None,
    runtime_api: str | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
) -> TelemetrySubscriber | None:
    """Listen for Lambda's platform events and subscribe to them; None if not possible.

    ``extension_id`` is the ``Lambda-Extension-Identifier`` of an extension registered
    during this INIT; ``runtime_api`` defaults to ``AWS_LAMBDA_RUNTIME_API``. Without
    either (outside Lambda), nothing is started. Never raises: a failure gives one
    warning and None.
    """
    runtime_api = runtime_api or os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not extension_id or not runtime_api:
        return None
    subscriber = TelemetrySubscriber(limit)
    try:
        _, port = subscriber.listen(sandbox_address() or "127.0.0.1")
        status = _subscribe(runtime_api, extension_id, port)
        if status != 200:
            raise RuntimeError(f"the Telemetry API refused the subscription (HTTP {status})")
    except Exception as exc:
        subscriber.close()
        report_failure("subscribing to the Telemetry API", exc)
        return None
    return subscriber
