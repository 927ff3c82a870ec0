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
  restore's ``durationMs``. They belong to the environment's first request after that
  INIT or restore (a restored environment's INIT ran before the snapshot), and are
  attached to its figures only, when its report does not carry them: an INIT report
  only with ``phase: init`` and ``status: success`` (``phase: invoke`` is a failed INIT
  run again inside an invocation, and an unsuccessful INIT measures no start).

Lambda sends an invocation's report once it is over, often during the next invocation
(events are not sent while the environment is frozen): :meth:`TelemetrySubscriber.
take_pending` hands over whatever has arrived, for the next export. Each request's
figures are handed over once: a repeated report replaces the one still pending, and is
ignored once its request's figures have been handed over. Reports given up unexported
(the store's bound, below) are counted, and :meth:`TelemetrySubscriber.take_evicted`
hands that count over the same way: each eviction to one export.

Every figure is bounded by what Lambda can report (:data:`MAX_DURATION_MS`,
:data:`MAX_MEMORY_MB`); one beyond it, negative or not a number is taken as absent, and a
report with no usable figure is dropped.

Fail open: nothing here raises into the caller; the listener is one daemon thread, which
never keeps the process from exiting and serves every connection itself (Lambda sends one
batch at a time; the local Lambda opens a connection per batch: a thread per connection
would be a thread per invocation), each for at most ``_CONNECTION_S`` and a bounded body
(a sender that drips or never ends cannot hold it), and answers 400 to a body it cannot
decode (not JSON, or nested past the recursion limit); the store holds at most ``limit``
requests (beyond that many waiting for an export, the oldest go: counted, said once);
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
import os
import threading
import time

from lifecycle_probe._safe import report_failure, start_daemon_thread, warn_once
from lifecycle_probe.probe_threads import mark_probe_thread

# ``typing``, ``dataclasses`` and ``collections`` cost milliseconds to import at INIT; the
# runtime client has imported ``json`` and ``threading`` already.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lifecycle_probe.rare_records import PlatformFigures

__all__ = ["MAX_DURATION_MS", "MAX_MEMORY_MB", "TelemetrySubscriber", "start"]

# The figures of a report (besides its request id).
_FIGURES = (
    "duration_ms",
    "billed_duration_ms",
    "max_memory_used_mb",
    "init_duration_ms",
    "restore_duration_ms",
)

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
# And for this long at most, whatever it sends: a peer dripping a byte at a time would
# otherwise hold the single listener thread (and every batch behind it) for ever. Lambda
# sends a batch of at most 256 KB over a local connection, in well under a millisecond.
_CONNECTION_S = 1.0
# The subscription is made during INIT: it must answer quickly or be given up.
_SUBSCRIBE_TIMEOUT_S = 1.0
_MAX_REQUEST_ID = 128
# The largest figures Lambda can report. A duration: an invocation runs at most 15 min
# (the longest timeout), and a failed INIT run again inside it adds at most 10 min (the
# on-demand INIT limit); the INIT of provisioned concurrency and SnapStart, up to 15 min,
# fits too. Memory: 10,240 MB, the largest a function can be given. Anything beyond is
# not Lambda's figure (a garbled or hostile sender) and is taken as absent.
MAX_DURATION_MS = (15 + 10) * 60_000
MAX_MEMORY_MB = 10_240


def _number(value: object, bound: float = MAX_DURATION_MS) -> float | None:
    """A figure in [0, ``bound``], else None (the sender is trusted for nothing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # Compared before any conversion: float() of a 400-digit int raises OverflowError.
    # NaN fails both comparisons.
    if not 0 <= value <= bound:
        return None
    return float(value)


def _whole(value: object, bound: float = MAX_DURATION_MS) -> int | None:
    number = _number(value, bound)
    return None if number is None else int(number)


class TelemetrySubscriber:
    """The received figures, per request id; fed by the listener (or by :meth:`receive`)."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = max(1, limit)
        self._cond = threading.Condition()
        # The last ``limit`` requests' figures, oldest first; those not handed over yet
        # are also in ``_pending`` (insertion order: oldest first).
        self._figures: dict[str, PlatformFigures] = {}
        self._pending: dict[str, PlatformFigures] = {}
        # INIT and restore durations reported on their own, for the first request after
        # them; that request's id once its platform.start or report has come.
        self._init_ms: float | None = None
        self._restore_ms: float | None = None
        self._first_request: str | None = None
        self._awaiting_first = True  # no request seen since the INIT (or the restore)
        # Whether the INIT report said phase "init", status "success" (None: none came).
        self._init_ok: bool | None = None
        # Reports given up because more than ``limit`` waited for an export: in all, and
        # those not yet handed over to an export (each is counted in one export only).
        self.evicted = 0
        self._evicted_untaken = 0
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
            pending = tuple(self._pending.values())
            self._pending = {}
            return pending

    def take_evicted(self) -> int:
        """How many reports were given up unexported since the last call."""
        with self._cond:
            evicted, self._evicted_untaken = self._evicted_untaken, 0
            return evicted

    def wait_for(self, request_id: str, timeout_s: float) -> PlatformFigures | None:
        """The figures of ``request_id``, waiting at most ``timeout_s`` for them."""
        with self._cond:
            self._cond.wait_for(lambda: request_id in self._figures, max(0.0, timeout_s))
            return self._figures.get(request_id)

    def init_comparable(self, request_id: str) -> bool:
        """Whether the INIT figure of ``request_id`` measures the start the probe saw: it
        is the environment's first request, after an INIT Lambda reported as a success in
        its init phase (a failed INIT, or one run again inside an invocation, is not what
        the probe measured)."""
        with self._cond:
            return request_id == self._first_request and self._init_ok is not False

    # -- what Lambda sends ---------------------------------------------------------------

    def receive(self, events: object) -> None:
        """Take one batch of Telemetry API events (a JSON array, decoded). Never raises."""
        if not isinstance(events, list):
            return
        try:
            # The figures' record, loaded with the first batch (after the first response,
            # never at INIT), before the lock: its import must not hold up the extension.
            import lifecycle_probe.rare_records  # noqa: F401
        except Exception as exc:
            report_failure("the Telemetry API listener", exc)
            return
        with self._cond:
            for event in events:
                # One event the listener cannot take costs that event, not the batch.
                try:
                    if isinstance(event, dict) and isinstance(event.get("record"), dict):
                        self._receive_locked(str(event.get("type")), event["record"])
                except Exception as exc:
                    report_failure("the Telemetry API listener", exc)
            self._cond.notify_all()

    def _receive_locked(self, event_type: str, record: dict[str, Any]) -> None:
        if event_type == "platform.start":
            self._note_request(record.get("requestId"))
            return
        metrics = record.get("metrics")
        if not isinstance(metrics, dict):
            return
        if event_type == "platform.initReport":
            # What AWS documents as a start's INIT: phase "init" (not a failed INIT run
            # again inside an invocation, "invoke"), ended with "success"; and only
            # before the environment's first request (a later one is no start's).
            if self._awaiting_first:
                ok = record.get("phase") == "init" and record.get("status") == "success"
                self._init_ok = ok
                self._init_ms = _number(metrics.get("durationMs")) if ok else None
        elif event_type == "platform.restoreReport":
            # A restore begins a new environment: its first request is still to come.
            if record.get("status", "success") == "success":
                self._restore_ms = _number(metrics.get("durationMs"))
                self._awaiting_first = True
                self._first_request = None
        elif event_type == "platform.report":
            self._report_locked(record, metrics)

    def _note_request(self, request_id: object) -> bool:
        """Take note of a request (its platform.start or report); True for a valid id."""
        if not isinstance(request_id, str) or not 0 < len(request_id) <= _MAX_REQUEST_ID:
            return False
        if self._awaiting_first:
            self._awaiting_first = False
            self._first_request = request_id
        return True

    def _report_locked(self, record: dict[str, Any], metrics: dict[str, Any]) -> None:
        request_id = record.get("requestId")
        if not self._note_request(request_id):
            return
        assert isinstance(request_id, str)
        if request_id in self._figures and request_id not in self._pending:
            return  # handed over already: a repeat reaches no second export
        # The model's record (sinks read it without importing this module): loaded by
        # receive, before the lock.
        from lifecycle_probe.rare_records import PlatformFigures

        figures = PlatformFigures(
            request_id=request_id,
            duration_ms=_number(metrics.get("durationMs")),
            billed_duration_ms=_whole(metrics.get("billedDurationMs")),
            max_memory_used_mb=_whole(metrics.get("maxMemoryUsedMB"), MAX_MEMORY_MB),
            init_duration_ms=_number(metrics.get("initDurationMs")),
            restore_duration_ms=_number(metrics.get("restoreDurationMs")),
        )
        if request_id == self._first_request:
            # The INIT and restore reported on their own belong to this request only.
            if figures.init_duration_ms is None and self._init_ms is not None:
                figures = figures.replace(init_duration_ms=self._init_ms)
            if figures.restore_duration_ms is None and self._restore_ms is not None:
                figures = figures.replace(restore_duration_ms=self._restore_ms)
        earlier = self._pending.get(request_id)
        if earlier is not None:
            # A repeat while still pending: its figures win, those it lacks are kept.
            figures = figures.replace(
                **{
                    name: getattr(earlier, name)
                    for name in _FIGURES
                    if getattr(figures, name) is None
                }
            )
        if all(getattr(figures, name) is None for name in _FIGURES):
            return  # nothing Lambda could have reported: no export for it
        if request_id == self._first_request:
            self._init_ms = self._restore_ms = None
        self._figures.pop(request_id, None)  # newest last
        self._figures[request_id] = figures
        while len(self._figures) > self._limit:
            del self._figures[next(iter(self._figures))]
        self._pending[request_id] = figures  # a repeat keeps its place in the queue
        if len(self._pending) > self._limit:
            # Nothing took them for ``limit`` reports (no export ran): the oldest go,
            # counted (for the next export: lifecycle.telemetry.dropped), and said once.
            del self._pending[next(iter(self._pending))]
            self.evicted += 1
            self._evicted_untaken += 1
            warn_once(
                "telemetry:evicted",
                "lifecycle_probe: more than %d of Lambda's reports waited for an export; "
                "the oldest are dropped and counted (this warning is shown once)",
                self._limit,
            )

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
            deadline = time.monotonic() + _CONNECTION_S
            buffered = b""
            while True:
                request = _read_request(connection, buffered, deadline)
                if request is None:
                    return
                body, buffered, keep_alive = request
                try:
                    events = json.loads(body)
                except (ValueError, RecursionError):
                    # Not JSON, or nested past the parser's recursion limit: nothing of
                    # it is taken, and the sender is told so.
                    status = b"400 Bad Request"
                else:
                    self.receive(events)
                    status = b"200 OK"
                connection.sendall(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Length: 0\r\n"
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


def _recv(connection: Any, size: int, deadline: float) -> bytes:
    """At most ``size`` bytes, waiting no longer than the connection's idle time and its
    deadline (TimeoutError past either)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the connection outlived its deadline")
    connection.settimeout(min(_IDLE_S, left))
    return bytes(connection.recv(size))


def _read_request(
    connection: Any, buffered: bytes, deadline: float
) -> tuple[bytes, bytes, bool] | None:
    """One HTTP/1.1 request's body, what followed it, and whether to keep the connection.

    None when the peer closed, or sent something this listener does not take (no
    ``Content-Length``, too large): then the connection is dropped. Every read ends by
    ``deadline`` (``time.monotonic()``): TimeoutError past it.
    """
    data = buffered
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEADER_BYTES:
            return None
        chunk = _recv(connection, 65_536, deadline)
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
        chunk = _recv(connection, min(65_536, length - len(rest)), deadline)
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
