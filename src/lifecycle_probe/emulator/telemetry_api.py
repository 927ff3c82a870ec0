"""The Lambda Telemetry API of one environment: subscriptions, buffering and delivery.

A registered extension subscribes with ``PUT /2022-07-01/telemetry`` (its
``Lambda-Extension-Identifier`` header, an HTTP destination, the types it wants and how
to buffer). The environment publishes platform events (:mod:`.platform_events`) to its
:class:`TelemetryDispatcher`, whose one thread POSTs each subscriber's events to its
destination as JSON arrays, in order, one batch at a time. As on Lambda:

* a batch goes out when a subscriber's buffer holds ``maxItems`` events or ``maxBytes``
  bytes, or its oldest event is ``timeoutMs`` old;
* nothing is sent while the environment is frozen: what falls due meanwhile goes out
  after the thaw (so the ``platform.report`` of one invocation usually arrives during
  the next one, or at SHUTDOWN); a freeze first lets a batch in flight finish;
* the events since the environment started are kept until INIT is over, so that an
  extension subscribing during INIT also gets ``platform.initStart``.

Only ``platform`` events are produced: ``function`` and ``extension`` (log lines) are
accepted as types, and nothing is sent for them. Only HTTP destinations in the sandbox
(``sandbox.localdomain``, which is 127.0.0.1 here, or 127.0.0.1 itself) are accepted.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lifecycle_probe.emulator.runtime_api import Reply

__all__ = ["Buffering", "Subscription", "TelemetryDispatcher", "event_time", "parse_subscription"]

SCHEMA_VERSIONS = frozenset({"2022-07-01", "2022-12-13", "2025-01-29"})
TELEMETRY_TYPES = frozenset({"platform", "function", "extension"})
# The sandbox's own host name: loopback in the local Lambda.
SANDBOX_HOSTS = {"sandbox.localdomain": "127.0.0.1", "127.0.0.1": "127.0.0.1"}

# The documented buffering bounds: (least, default, most).
MAX_ITEMS = (1000, 1000, 10_000)
MAX_BYTES = (262_144, 262_144, 1_048_576)
TIMEOUT_MS = (25, 1000, 30_000)

# How long one POST to a subscriber may take; a subscriber slower than this loses the batch.
_POST_TIMEOUT_S = 2.0
# How long a freeze waits for a batch in flight before stopping the process anyway.
_PAUSE_WAIT_S = 1.0
# Events kept for subscriptions made during INIT.
_BACKLOG_LIMIT = 1000


@dataclass(frozen=True)
class Buffering:
    """When a subscriber's events go out: at ``max_items``, ``max_bytes`` or ``timeout_ms``."""

    max_items: int = MAX_ITEMS[1]
    max_bytes: int = MAX_BYTES[1]
    timeout_ms: int = TIMEOUT_MS[1]


@dataclass(frozen=True)
class Subscription:
    """A valid subscription request: where to send, what, and how to buffer."""

    host: str
    port: int
    path: str
    types: frozenset[str]
    buffering: Buffering


def _bounded(buffering: dict[str, Any], name: str, bounds: tuple[int, int, int]) -> int:
    value = buffering.get(name, bounds[1])
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"buffering.{name} must be an integer")
    if not bounds[0] <= value <= bounds[2]:
        raise ValueError(f"buffering.{name} must be between {bounds[0]} and {bounds[2]}")
    return value


def _parse(body: bytes) -> Subscription:
    request = json.loads(body)
    if not isinstance(request, dict):
        raise ValueError("the body must be a JSON object")
    if request.get("schemaVersion") not in SCHEMA_VERSIONS:
        raise ValueError(f"schemaVersion must be one of {sorted(SCHEMA_VERSIONS)}")
    destination = request.get("destination")
    if not isinstance(destination, dict) or destination.get("protocol") != "HTTP":
        raise ValueError('destination must be {"protocol": "HTTP", "URI": ...} here')
    uri = urlsplit(str(destination.get("URI", "")))
    host = SANDBOX_HOSTS.get(uri.hostname or "")
    if uri.scheme != "http" or host is None or uri.port is None:
        raise ValueError(
            "destination.URI must be http://sandbox.localdomain:PORT (or 127.0.0.1:PORT)"
        )
    types = request.get("types")
    if not isinstance(types, list) or not types or not set(types) <= TELEMETRY_TYPES:
        raise ValueError(f"types must be a non-empty list of {sorted(TELEMETRY_TYPES)}")
    buffering = request.get("buffering") or {}
    if not isinstance(buffering, dict):
        raise ValueError("buffering must be an object")
    return Subscription(
        host=host,
        port=uri.port,
        path=uri.path or "/",
        types=frozenset(types),
        buffering=Buffering(
            max_items=_bounded(buffering, "maxItems", MAX_ITEMS),
            max_bytes=_bounded(buffering, "maxBytes", MAX_BYTES),
            timeout_ms=_bounded(buffering, "timeoutMs", TIMEOUT_MS),
        ),
    )


def parse_subscription(body: bytes) -> Subscription | Reply:
    """The subscription in a request body, or the 400 reply that refuses it."""
    try:
        return _parse(body)
    except (ValueError, TypeError) as exc:
        return Reply.error(400, "ValidationError", str(exc))


def event_time(time_ns: int) -> str:
    """An event's ``time``: ISO 8601 in UTC with milliseconds, as Lambda writes it."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1_000_000:03d}Z"


@dataclass
class _Subscriber:
    name: str  # the extension's, for log lines
    subscription: Subscription
    events: deque[tuple[float, bytes]] = field(default_factory=deque)  # (queued, JSON)
    queued_bytes: int = 0
    dropped: int = 0

    def due_at(self) -> float | None:
        """When its buffer must go out (``time.monotonic()``), None when it is empty."""
        if not self.events:
            return None
        buffering = self.subscription.buffering
        if len(self.events) >= buffering.max_items or self.queued_bytes >= buffering.max_bytes:
            return 0.0
        return self.events[0][0] + buffering.timeout_ms / 1000

    def take_batch(self) -> list[bytes]:
        """The oldest events that fit one batch (at least one)."""
        buffering = self.subscription.buffering
        batch: list[bytes] = []
        size = 0
        while self.events and len(batch) < buffering.max_items:
            event = self.events[0][1]
            if batch and size + len(event) > buffering.max_bytes:
                break
            self.events.popleft()
            self.queued_bytes -= len(event)
            size += len(event)
            batch.append(event)
        return batch


class TelemetryDispatcher:
    """One environment's telemetry: who subscribed, what is buffered, the sending thread.

    Every method is quick and never blocks on a subscriber (except :meth:`pause`, for at
    most a moment), so the environment may call them with its own lock held; the
    sending thread never takes that lock.
    """

    def __init__(self, name: str, log: Callable[[str], None]) -> None:
        self._name = name
        self._log = log
        self._cond = threading.Condition()
        self._subscribers: list[_Subscriber] = []
        self._backlog: list[bytes] | None = []  # None once INIT is over
        self._paused = False
        self._in_flight = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def subscribe(self, extension_name: str, subscription: Subscription) -> None:
        """Add a subscriber; it gets the events of INIT so far, then every new one."""
        with self._cond:
            if self._closed:
                return
            subscriber = _Subscriber(extension_name, subscription)
            if "platform" in subscription.types:
                now = time.monotonic()
                for event in self._backlog or ():
                    self._queue_locked(subscriber, now, event)
            self._subscribers.append(subscriber)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"telemetry-{self._name}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def publish(self, event_type: str, record: dict[str, Any], time_ns: int | None = None) -> None:
        """Buffer one platform event for every subscriber of ``platform`` events."""
        event = json.dumps(
            {
                "time": event_time(time.time_ns() if time_ns is None else time_ns),
                "type": event_type,
                "record": record,
            },
            separators=(",", ":"),
        ).encode()
        with self._cond:
            if self._closed:
                return
            if self._backlog is not None and len(self._backlog) < _BACKLOG_LIMIT:
                self._backlog.append(event)
            now = time.monotonic()
            for subscriber in self._subscribers:
                if "platform" in subscriber.subscription.types:
                    self._queue_locked(subscriber, now, event)
            self._cond.notify_all()

    def _queue_locked(self, subscriber: _Subscriber, now: float, event: bytes) -> None:
        # Bounded as on Lambda: past the most a buffer may hold, the oldest are dropped.
        if len(subscriber.events) >= MAX_ITEMS[2]:
            _, oldest = subscriber.events.popleft()
            subscriber.queued_bytes -= len(oldest)
            subscriber.dropped += 1
        subscriber.events.append((now, event))
        subscriber.queued_bytes += len(event)

    def end_init(self) -> None:
        """INIT is over: later subscribers get only the events from then on."""
        with self._cond:
            self._backlog = None

    def pause(self) -> None:
        """Send nothing more until :meth:`resume` (the process is about to be frozen)."""
        with self._cond:
            self._paused = True
            deadline = time.monotonic() + _PAUSE_WAIT_S
            while self._in_flight and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)

    def resume(self) -> None:
        """Send again (the process has been thawed)."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def close(self) -> None:
        """Stop for good (the environment is dead): buffered events are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def dropped(self) -> dict[str, int]:
        """Events dropped per subscribing extension (buffer overflow or failed delivery)."""
        with self._cond:
            return {s.name: s.dropped for s in self._subscribers}

    # -- the sending thread ------------------------------------------------------------

    def _next_batch_locked(self) -> tuple[_Subscriber, list[bytes]] | float | None:
        """A batch that is due, else when the next falls due (None: nothing buffered)."""
        if self._paused:
            return None
        now = time.monotonic()
        soonest: float | None = None
        for subscriber in self._subscribers:
            due = subscriber.due_at()
            if due is None:
                continue
            if due <= now:
                return subscriber, subscriber.take_batch()
            soonest = due if soonest is None else min(soonest, due)
        return soonest

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    found = self._next_batch_locked()
                    if isinstance(found, tuple):
                        break
                    self._cond.wait(None if found is None else max(0.0, found - time.monotonic()))
                subscriber, batch = found
                self._in_flight = True
            try:
                failure = self._post(subscriber.subscription, batch)
            finally:
                with self._cond:
                    self._in_flight = False
                    if failure is not None:
                        subscriber.dropped += len(batch)
                    self._cond.notify_all()
            if failure is not None:
                self._log(
                    f"TELEMETRY {len(batch)} events to extension {subscriber.name} "
                    f"dropped: {failure}"
                )

    @staticmethod
    def _post(subscription: Subscription, batch: list[bytes]) -> str | None:
        """POST one batch as a JSON array; None if the subscriber took it, else why not."""
        body = b"[" + b",".join(batch) + b"]"
        # http.client, not urllib: a proxy from the environment must never be used here.
        connection = http.client.HTTPConnection(
            subscription.host, subscription.port, timeout=_POST_TIMEOUT_S
        )
        try:
            connection.request(
                "POST", subscription.path, body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()
        return None if response.status < 300 else f"HTTP {response.status}"
