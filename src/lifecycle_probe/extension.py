"""An internal Lambda extension that flushes telemetry after the response, before the freeze.

Lambda freezes an environment only when the runtime *and every registered extension* have
asked for their next event. The probe registers an internal extension (a thread in the
runtime process) during INIT through the Extensions API. For each invocation it waits
until the runtime has sent the response (the runtime asks for its next event), runs the
registered flushes, bounded by the flush timeout and the invocation's deadline, and only
then asks for its own next event: the caller never waits for the export, and nothing
buffered is lost to the freeze.

Right after registering, before its first ``event/next``, it subscribes to the Telemetry
API's platform events (:mod:`lifecycle_probe.telemetry_api`): only an extension can, and
only during INIT; a later subscription would miss the INIT's own events.

The HTTP here is a few lines over a socket: ``http.client`` would cost more to import
than the probe's whole INIT path.
"""

from __future__ import annotations

import _thread
import os
import time

from lifecycle_probe._safe import report_failure, start_daemon_thread, warn_once
from lifecycle_probe.config import variable
from lifecycle_probe.probe_threads import mark_probe_thread, probe_work
from lifecycle_probe.runtime_hooks import (
    add_event_request_listener,
    event_requests_seen,
    when_runtime_client_wrapped,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from lifecycle_probe.rare_records import PlatformFigures
    from lifecycle_probe.telemetry_api import TelemetrySubscriber

__all__ = [
    "REGISTRATION_WAIT_S",
    "InternalExtension",
    "active_extension",
    "after_response_extension",
    "extension_for_this_environment",
    "http_request",
]

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
# The exporters that write Lambda's own figures (README "Lambda's own figures").
FIGURE_EXPORTERS = frozenset({"emf", "otlp", "otlp-file"})
# AWS_LAMBDA_INITIALIZATION_TYPE of Lambda Managed Instances, where no extension registers.
MANAGED_INSTANCES = "lambda-managed-instances"
# Lambda's longest timeout: a deadline further away than this (a garbled deadlineMs) is
# taken as this far, so that every wait of the extension stays bounded.
MAX_INVOCATION_S = 900.0


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
    # ``timeout_s`` bounds the whole exchange, not each read: a reply dripped a byte at a
    # time would otherwise never time out.
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        conn.settimeout(timeout_s)
        conn.connect((host.strip("[]") or "127.0.0.1", int(port)))
        conn.sendall(request)
        chunks = []
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{method} {path}: no whole reply in {timeout_s} s")
                conn.settimeout(left)
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


class InternalExtension:
    """The probe's internal extension: register, then flush after every response."""

    def __init__(
        self, runtime_api: str, flush_timeout_s: float, telemetry_api: bool = True
    ) -> None:
        self.runtime_api = runtime_api
        self.flush_timeout_s = flush_timeout_s
        self.extension_id: str | None = None
        # Whether to subscribe to the Telemetry API once registered, and the subscriber.
        self.telemetry_api = telemetry_api
        self.telemetry: TelemetrySubscriber | None = None
        self._pid = os.getpid()
        self._flushes: list[Callable[[float], object]] = []
        self._timeout_reports: list[Callable[[int], object]] = []
        # Request ids of the responses the runtime has sent, in order, and a lock held
        # while none is there to be read (released by each response: a wake-up, which
        # may find the list emptied already). A list and a lock, not a queue: the
        # ``_queue`` module is a shared library to load at INIT, for one waiting thread.
        self._responses: list[str | None] = []
        self._no_response = _thread.allocate_lock()
        self._no_response.acquire()
        self._registration = _thread.allocate_lock()
        self._registration.acquire()
        self.flushed = 0
        # Set by after_response_extension: check at the first event that the runtime's
        # requests go through the probe's hook (else no response would ever be seen).
        self.watch_runtime = False
        # True once the extension knows it cannot see responses (an unknown runtime
        # client): it then only keeps Lambda's books, and the sinks flush themselves.
        self.blind = False
        self._invokes = 0
        # True from the moment a failure made the extension leave Lambda's books.
        self.left = False
        # Whether start() was asked for through after_response_extension.
        self.started = False

    def add_flush(self, flush: Callable[[float], object]) -> None:
        """Run ``flush(timeout_s)`` after each response."""
        self._flushes.append(flush)

    def add_timeout_report(self, report: Callable[[int], object]) -> None:
        """Call ``report(deadline_ns)`` when an invocation is about to time out."""
        self._timeout_reports.append(report)

    def start(self) -> None:
        """Register from a thread of our own; INIT goes on meanwhile."""
        import atexit

        with probe_work():  # threading, if imported here, is the probe's import
            start_daemon_thread(self._run, "lifecycle-probe-extension")
        atexit.register(self._flush_at_exit)

    def _flush_at_exit(self) -> None:
        # A handler that raised SystemExit or KeyboardInterrupt ends the runtime process
        # (the runtime clients catch Exception only): its record, queued for the flush
        # after a response that will never be sent, goes out now, bounded, or it would be
        # lost without a trace. The extension's own thread is a daemon, alive until the
        # interpreter is torn down after the exit handlers.
        try:
            if self.registered:
                self._flush(self.flush_timeout_s)
        except BaseException as exc:
            report_failure("extension flush at exit", exc)

    def wait_registered(self, timeout_s: float = REGISTRATION_WAIT_S) -> bool:
        """Block (bounded) until registration finished, successfully or not."""
        if self._registration.acquire(timeout=timeout_s):
            self._registration.release()
            return True
        return False

    @property
    def registered(self) -> bool:
        """True while this extension flushes after the response in this process (not in a
        fork): registered with Lambda, not gone, and seeing the runtime's responses. When
        False, the sinks flush before each response themselves."""
        if self.watch_runtime and not self.started:
            self._never_started()
        return self.extension_id is not None and self._pid == os.getpid() and not self.blind

    def _never_started(self) -> None:
        # Asked at an invocation's end: by then a known runtime client would have been
        # wrapped, and the extension started. Said once, then never checked again.
        self.watch_runtime = False
        warn_once(
            "extension:unhooked",
            "lifecycle_probe: the runtime client is not one the probe can hook (awslambdaric "
            "or the managed runtimes'), so no extension could see the responses; flushing "
            "before each response instead of after it",
        )

    def take_platform_figures(self) -> tuple[PlatformFigures, ...]:
        """Lambda's figures that arrived since the last call (none in a forked child: the
        subscription reports the parent's requests)."""
        telemetry = self.telemetry
        if telemetry is None or self._pid != os.getpid():
            return ()
        return telemetry.take_pending()

    def take_platform_evicted(self) -> int:
        """How many of Lambda's reports were given up unexported since the last call (as
        :meth:`take_platform_figures`, none in a forked child)."""
        telemetry = self.telemetry
        if telemetry is None or self._pid != os.getpid():
            return 0
        return telemetry.take_evicted()

    def _holds_id(self) -> bool:
        # Lambda counts on us (event/next after every invocation) as long as we hold an id.
        return self.extension_id is not None and self._pid == os.getpid()

    def response_sent(self, request_id: str | None = None) -> None:
        """The runtime sent the response to ``request_id`` and asks for its next event."""
        if self.registered:
            self._responses.append(request_id)
            try:
                self._no_response.release()
            except RuntimeError:  # released already: the waiter has yet to wake up
                pass

    # -- the extension's thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            # Whatever this thread imports (socket, json, the SDK in a flush) or connects to
            # is the probe's.
            mark_probe_thread()
        except Exception as exc:
            report_failure("extension thread", exc)
        try:
            self._register()
        except Exception as exc:
            report_failure("extension registration", exc)
        finally:
            self._registration.release()
        # After the release: the runtime's first request for work (INIT end) does not wait
        # for the subscription; Lambda's INIT does, until our first event/next below.
        self._subscribe_to_telemetry()
        try:
            self._serve()
        except BaseException as exc:
            # Never die while Lambda counts on us: it would hold every invocation for our
            # next request until its deadline, and the sinks would wait for flushes that
            # never come.
            report_failure("extension", exc)
            self._leave("Extension.Crashed")

    def _serve(self) -> None:
        while self._holds_id():
            event = self._next_event_or_leave()
            if event is None:
                continue
            try:
                self._after_response(event)
            except BaseException as exc:
                # A bug of the probe's or a sink raising past its guard (SystemExit,
                # KeyboardInterrupt): what remains of this invocation's budget goes to one
                # more flush, then the extension leaves, and the sinks flush before each
                # response from now on, which needs nothing of this thread.
                report_failure("extension after-response step", exc)
                try:
                    self._flush(self._budget_s(event))
                except BaseException as again:
                    report_failure("extension after-response step", again)
                self._leave("Extension.AfterResponseFailed")
                return

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

    def _subscribe_to_telemetry(self) -> None:
        if not self.telemetry_api or not self._holds_id():
            return
        try:
            from lifecycle_probe.telemetry_api import start as subscribe

            self.telemetry = subscribe(self.extension_id, self.runtime_api)
        except Exception as exc:  # (start() reports its own failures; this is a bug's)
            report_failure("Telemetry API subscription", exc)

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
        self._leave("Extension.EventNextFailed")
        return None

    def _leave(self, error_type: str) -> None:
        """Leave Lambda's books: Lambda would wait for our next request after every
        response, for ever. Tell it we are gone (exit/error), and from now on the sinks
        flush before each response (``registered`` is False)."""
        extension_id, self.extension_id = self.extension_id, None
        self.left = True
        if extension_id is None:
            return
        try:
            http_request(
                self.runtime_api,
                "POST",
                f"/{API_VERSION}/extension/exit/error",
                {
                    "Lambda-Extension-Identifier": str(extension_id),
                    "Lambda-Extension-Function-Error-Type": error_type,
                },
                b"{}",
                timeout_s=REGISTRATION_WAIT_S,
            )
        except Exception as exc:
            report_failure("extension exit/error", exc)

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

    def _deadline_ms(self, event: dict[str, Any]) -> float:
        """The invocation's deadline (epoch milliseconds, as the event gives it), never
        beyond Lambda's longest timeout from now, whatever the event says."""
        latest_ms = (time.time() + MAX_INVOCATION_S) * 1000
        deadline_ms = event.get("deadlineMs")
        if not isinstance(deadline_ms, (int, float)) or isinstance(deadline_ms, bool):
            return latest_ms
        # NaN compares false both ways: it fails this test and takes the bound.
        return deadline_ms if deadline_ms <= latest_ms else latest_ms

    def _budget_s(self, event: dict[str, Any]) -> float:
        """A flush's time now: the flush timeout, within the invocation's deadline."""
        left = self._deadline_ms(event) / 1000 - time.time() - DEADLINE_MARGIN_S
        return max(0.0, min(self.flush_timeout_s, left))

    def _sees_responses(self) -> bool:
        """At the first event: True when the runtime's request for it went through the
        probe's hook. If not (an unknown runtime client, or one whose loop bypasses the
        wrapped method), no response would ever be seen: the extension would hold every
        invocation until its deadline. It goes blind instead: it asks for its next event
        at once (Lambda's books stay right, nothing is held) and the sinks flush
        themselves before each response."""
        self._invokes += 1
        if self._invokes == 1 and self.watch_runtime and event_requests_seen() == 0:
            self.blind = True
            warn_once(
                "extension:blind",
                "lifecycle_probe: the runtime's requests for events do not go through the "
                "probe's hook (an unknown runtime client?); flushing before each response "
                "instead of after it",
            )
        return not self.blind

    def _after_response(self, event: dict[str, Any]) -> None:
        if not self._sees_responses():
            return
        request_id = event.get("requestId")
        deadline_ms = self._deadline_ms(event)
        deadline_s = deadline_ms / 1000
        # The event reaches us as it reaches the runtime: wait for its response, but not
        # past the moment a timeout must be reported to reach the exporter in time.
        if self._wait_for_response(request_id, deadline_s - TIMEOUT_MARGIN_S):
            self._flush(self._budget_s(event))
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
        # (Environment.claim_timeout); wait for the runtime before the next event.
        self._wait_for_response(request_id, deadline_s + 1.0)

    def _wait_for_response(self, request_id: object, until_s: float) -> bool:
        while True:
            try:
                sent = self._responses.pop(0)
            except IndexError:
                if not self._no_response.acquire(timeout=max(0.001, until_s - time.time())):
                    return False
                continue  # a response came (or a wake-up whose response was read already)
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


def extension_for_this_environment(
    flush_timeout_s: float,
    telemetry_api: bool = True,
    exporters: tuple[str, ...] | None = None,
) -> InternalExtension | None:
    """:func:`after_response_extension`, told whether this environment's INIT is over (the
    sinks that flush through it cannot know: they see records, not the environment).

    ``exporters`` (the configured ones): no subscription unless one of them writes
    Lambda's figures (the console prints them only beside one of those: a listener
    thread and a subscription for the console alone are not worth their cost)."""
    if exporters is not None and FIGURE_EXPORTERS.isdisjoint(exporters):
        telemetry_api = False
    from lifecycle_probe.environment import current_environment
    from lifecycle_probe.records import SOURCE_RUNTIME

    environment = current_environment()
    init_over = environment.seq > 0 or environment.init_end_source == SOURCE_RUNTIME
    return after_response_extension(flush_timeout_s, init_over, telemetry_api)


def after_response_extension(
    flush_timeout_s: float, init_over: bool, telemetry_api: bool = True
) -> InternalExtension | None:
    """The process's internal extension, started on first call; None where Lambda has none.

    Registration is only possible during INIT and inside Lambda (``AWS_LAMBDA_RUNTIME_API``).
    With ``telemetry_api``, it subscribes to Lambda's platform events once registered.
    """
    global _extension
    with _extension_lock:
        if _extension is not None:
            return _extension
        runtime_api = variable("AWS_LAMBDA_RUNTIME_API")
        if variable("AWS_LAMBDA_INITIALIZATION_TYPE") == MANAGED_INSTANCES:
            # Lambda Managed Instances refuse every extension's registration (HTTP 403)
            # and have no freeze to flush before: asking would only log a warning in each
            # worker. The sinks flush before each response; no figures of Lambda's.
            return None
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
        extension = InternalExtension(runtime_api, flush_timeout_s, telemetry_api)
        extension.watch_runtime = True
        _extension = extension
    # Register only once the runtime client's event request is wrapped: only then can the
    # extension see responses (and the first request wait for registration). A runtime
    # client imported after the probe is wrapped at its import, still during INIT; an
    # unknown one never is, and the extension never registers: no invocation is held,
    # and the sinks flush before each response.
    when_runtime_client_wrapped(lambda: _start(extension))
    return extension


def _start(extension: InternalExtension) -> None:
    with _extension_lock:
        if extension.started:
            return
        extension.started = True
    add_event_request_listener(extension)
    extension.start()
