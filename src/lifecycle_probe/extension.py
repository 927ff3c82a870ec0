"""An internal Lambda extension that flushes telemetry after the response, before the freeze.

Lambda freezes an environment only when the runtime *and every registered extension* have
asked for their next event. The probe registers an internal extension (a thread in the
runtime process) during INIT through the Extensions API. For each invocation it waits
until the runtime has sent the response (the runtime asks for its next event), runs the
registered flushes, bounded by the flush timeout and the invocation's deadline, and only
then asks for its own next event: the caller never waits for the export, and nothing
buffered is lost to the freeze.

The HTTP here is a few lines over a socket: ``http.client`` would cost more to import
than the probe's whole INIT path.
"""

from __future__ import annotations

import _thread
import os
import time
from _queue import Empty, SimpleQueue

from lifecycle_probe._safe import report_failure, warn_once
from lifecycle_probe.environment import mark_probe_thread
from lifecycle_probe.runtime_hooks import EventRequestListener, add_event_request_listener

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

EXTENSION_NAME = "lifecycle-probe"
API_VERSION = "2020-01-01"
# How long the runtime's first request for work may wait for registration to finish.
REGISTRATION_WAIT_S = 1.0
# Time kept back from the invocation's deadline for the extension's own next request.
DEADLINE_MARGIN_S = 0.1
# An invocation still running this long before its deadline is reported as a timeout:
# enough to export the record before Lambda ends the invocation with no warning to the
# runtime, and short, because a handler finishing inside it is reported as timed out.
TIMEOUT_MARGIN_S = 0.1
# event/next failures in a row before the extension leaves (with exit/error).
NEXT_EVENT_ATTEMPTS = 3


def http_request(
    address: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout_s: float | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to ``host:port`` (``Connection: close``): status, headers, body."""
    # The C module itself: socket.py would add its own imports (enum, selectors) to INIT.
    import _socket

    host, _, port = address.rpartition(":")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {address}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    # The Runtime API address is an IP and port (127.0.0.1:9001 on Lambda): no DNS.
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    conn = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout_s)
        conn.connect((host.strip("[]") or "127.0.0.1", int(port)))
        conn.sendall(request)
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        conn.close()
    raw = b"".join(chunks)
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    length = parsed.get("content-length")
    if length is not None and length.isdigit():
        payload = payload[: int(length)]
    return status, parsed, payload


class InternalExtension(EventRequestListener):
    """The probe's internal extension: register, then flush after every response."""

    def __init__(self, runtime_api: str, flush_timeout_s: float) -> None:
        self.runtime_api = runtime_api
        self.flush_timeout_s = flush_timeout_s
        self.extension_id: str | None = None
        self._pid = os.getpid()
        self._flushes: list[Callable[[float], object]] = []
        self._timeout_reports: list[Callable[[int], object]] = []
        # Request ids of the responses the runtime has sent, in order.
        self._responses: SimpleQueue[str | None] = SimpleQueue()
        self._registration = _thread.allocate_lock()
        self._registration.acquire()
        self.flushed = 0

    def add_flush(self, flush: Callable[[float], object]) -> None:
        """Run ``flush(timeout_s)`` after each response."""
        self._flushes.append(flush)

    def add_timeout_report(self, report: Callable[[int], object]) -> None:
        """Call ``report(deadline_ns)`` when an invocation is about to time out."""
        self._timeout_reports.append(report)

    def start(self) -> None:
        """Register from a thread of our own; INIT goes on meanwhile."""
        _thread.start_new_thread(self._run, ())

    def wait_registered(self, timeout_s: float = REGISTRATION_WAIT_S) -> bool:
        """Block (bounded) until registration finished, successfully or not."""
        if self._registration.acquire(timeout=timeout_s):
            self._registration.release()
            return True
        return False

    @property
    def registered(self) -> bool:
        """True while Lambda counts on this extension in this process (not in a fork)."""
        return self.extension_id is not None and self._pid == os.getpid()

    def response_sent(self, request_id: str | None = None) -> None:
        """The runtime sent the response to ``request_id`` and asks for its next event."""
        if self.registered:
            self._responses.put(request_id)

    # -- the extension's thread -------------------------------------------------------------

    def _run(self) -> None:
        # Whatever this thread imports (socket, json, the SDK in a flush) is the probe's.
        from lifecycle_probe.imports import active_tracer

        tracer = active_tracer()
        if tracer is not None:
            tracer.ignore_this_thread()
        mark_probe_thread()
        try:
            self._register()
        except Exception as exc:
            report_failure("extension registration", exc)
        finally:
            self._registration.release()
        while self.registered:
            event = self._next_event_or_leave()
            if event is not None:
                self._after_response(event)

    def _register(self) -> None:
        status, headers, body = http_request(
            self.runtime_api,
            "POST",
            f"/{API_VERSION}/extension/register",
            {"Lambda-Extension-Name": EXTENSION_NAME, "Content-Type": "application/json"},
            b'{"events": ["INVOKE"]}',
            timeout_s=REGISTRATION_WAIT_S,
        )
        if status != 200 or not headers.get("lambda-extension-identifier"):
            warn_once(
                "extension:refused",
                "lifecycle_probe: the Extensions API refused registration (HTTP %s: %s); "
                "flushing before each response instead",
                status,
                body[:200].decode("utf-8", "replace"),
            )
            return
        self.extension_id = headers["lambda-extension-identifier"]

    def _next_event_or_leave(self) -> dict[str, Any] | None:
        """The next event; after repeated failures, leave Lambda's books (never hang it)."""
        for attempt in range(NEXT_EVENT_ATTEMPTS):
            try:
                return self._next_event()
            except Exception as exc:
                if attempt + 1 < NEXT_EVENT_ATTEMPTS:
                    time.sleep(0.05 * 2**attempt)
                    continue
                report_failure("extension event/next", exc)
        # Lambda would wait for our next request after every response, for ever: tell it
        # we are gone, and let the sinks flush before each response instead.
        extension_id, self.extension_id = self.extension_id, None
        try:
            http_request(
                self.runtime_api,
                "POST",
                f"/{API_VERSION}/extension/exit/error",
                {
                    "Lambda-Extension-Identifier": str(extension_id),
                    "Lambda-Extension-Function-Error-Type": "Extension.EventNextFailed",
                },
                b"{}",
                timeout_s=REGISTRATION_WAIT_S,
            )
        except Exception as exc:
            report_failure("extension exit/error", exc)
        return None

    def _next_event(self) -> dict[str, Any]:
        import json

        assert self.extension_id is not None
        status, _, body = http_request(
            self.runtime_api,
            "GET",
            f"/{API_VERSION}/extension/event/next",
            {"Lambda-Extension-Identifier": self.extension_id},
        )
        if status != 200:
            raise RuntimeError(f"event/next answered HTTP {status}")
        event = json.loads(body)
        if not isinstance(event, dict):
            raise RuntimeError("event/next answered with something other than an object")
        return event

    def _after_response(self, event: dict[str, Any]) -> None:
        request_id = event.get("requestId")
        deadline_ms = event.get("deadlineMs")
        if not isinstance(deadline_ms, (int, float)):
            deadline_ms = (time.time() + 900) * 1000
        deadline_s = deadline_ms / 1000
        # The event reaches us as it reaches the runtime: wait for its response, but not
        # past the moment a timeout must be reported to reach the exporter in time.
        if self._wait_for_response(request_id, deadline_s - TIMEOUT_MARGIN_S):
            budget = min(self.flush_timeout_s, deadline_s - time.time() - DEADLINE_MARGIN_S)
            self._flush(max(0.0, budget))
            return
        # Still running just before the deadline: Lambda will end it as a timeout and
        # freeze or reset the environment with no word to the runtime. Report it now.
        for report in list(self._timeout_reports):
            try:
                report(int(deadline_ms * 1_000_000))
            except Exception as exc:
                report_failure("timeout report", exc)
        self._flush(max(0.0, deadline_s - time.time() - 0.01))
        # Should the handler make it after all, its own record is not exported twice
        # (Environment.timeout_reported); wait for the runtime before the next event.
        self._wait_for_response(request_id, deadline_s + 1.0)

    def _wait_for_response(self, request_id: object, until_s: float) -> bool:
        while True:
            try:
                sent = self._responses.get(timeout=max(0.001, until_s - time.time()))
            except Empty:
                return False
            # A response to an older request (one that outlived its deadline) is stale.
            if sent is None or request_id is None or sent == request_id:
                return True

    def _flush(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for flush in list(self._flushes):
            try:
                flush(max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                report_failure("after-response flush", exc)
        self.flushed += 1


_extension: InternalExtension | None = None
_extension_lock = _thread.allocate_lock()


def active_extension() -> InternalExtension | None:
    """The process's internal extension, if one was started."""
    return _extension


def after_response_extension(flush_timeout_s: float, init_over: bool) -> InternalExtension | None:
    """The process's internal extension, started on first call; None where Lambda has none.

    Registration is only possible during INIT and inside Lambda (``AWS_LAMBDA_RUNTIME_API``).
    """
    global _extension
    with _extension_lock:
        if _extension is not None:
            return _extension
        runtime_api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
        if not runtime_api or init_over:
            if runtime_api:
                warn_once(
                    "extension:late",
                    "lifecycle_probe: the probe was set up after INIT, too late to register an "
                    "extension; flushing before each response instead",
                )
            # Outside Lambda: flush before each response, silently (logging would cost
            # an import at INIT for a message nobody needs).
            return None
        extension = InternalExtension(runtime_api, flush_timeout_s)
        add_event_request_listener(extension)
        extension.start()
        _extension = extension
        return extension
