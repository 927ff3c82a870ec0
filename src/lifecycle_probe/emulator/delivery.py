"""Delivering an invocation: the local Lambda's ``invoke`` and the runtime's side of it.

:meth:`InvocationDelivery.invoke` waits for INIT (and a snap-start restore), thaws the
environment, hands the event to the runtime (``invocation/next``) and to extensions
(``INVOKE``), waits for the answer (``invocation/{id}/response`` or ``/error``) until
the function's timeout, and reports what happened (:class:`Served`, the REPORT line).
The Runtime API calls the runtime makes (``init/error``, ``restore/next`` included)
are answered here; the states they move through are :mod:`.lifecycle`'s.
"""

from __future__ import annotations

import time
from typing import Any

from lifecycle_probe.emulator import platform_events, truth
from lifecycle_probe.emulator.function import SNAP_START
from lifecycle_probe.emulator.invocation import (
    Invocation,
    Served,
    event_reply,
    parse_payload,
    served_from,
)
from lifecycle_probe.emulator.lifecycle import (
    DEAD,
    IDLE,
    INIT,
    INVOKING,
    POST_INVOKE,
    RESTORING,
    SHUTDOWN,
    SNAPSHOT,
    EnvironmentLifecycle,
)
from lifecycle_probe.emulator.reports import report_figures
from lifecycle_probe.emulator.runtime_api import ACCEPTED, Peer, Reply

__all__ = ["SETTLE_SLACK_S", "InvocationDelivery"]

# The least time a runtime gets, after its response, to ask for its next event.
SETTLE_SLACK_S = 0.25


class InvocationDelivery(EnvironmentLifecycle):
    """The invocation side of an environment: ``invoke`` and the runtime's Runtime API."""

    def _init_failure_locked(self, outcome: str, request_id: str) -> Served:
        now = time.time_ns()
        error: Any = self.init_error
        error_type = self.init_error_type
        if outcome == truth.TIMEOUT:
            error_type = "Sandbox.Timedout"
            error = {
                "errorMessage": f"RequestId: {request_id} Error: INIT timed out",
                "errorType": error_type,
            }
        elif error is None:
            error_type = "Runtime.ExitError"
            error = {
                "errorMessage": f"RequestId: {request_id} Error: Runtime exited during INIT"
                + (
                    f" with exit status {self.exit_status}"
                    if self.exit_status is not None
                    else f" ({self.end_reason})"
                ),
                "errorType": error_type,
            }
        return Served(
            cold=True,
            outcome=outcome,
            delivered_ns=0,
            end_ns=now,
            error=error,
            error_type=error_type,
        )

    def invoke(
        self, invocation: Invocation, *, init_timeout_s: float, wait_for_freeze: bool
    ) -> Served:
        """Serve one invocation in this (reserved) environment.

        Waits for INIT (and, under snap-start, the snapshot pause and restore), thaws,
        delivers the event to the runtime and to extensions, and waits for the response
        or error until the function timeout (then kills the environment). With
        ``wait_for_freeze``, also waits until the environment has settled again (frozen),
        so that sequential invocations find it idle.
        """
        with self._cond:
            try:
                return self._invoke_locked(invocation, init_timeout_s, wait_for_freeze)
            finally:
                # Normally released when the response arrives; this covers failures.
                self._release_locked(invocation.request_id)

    def _invoke_locked(
        self, invocation: Invocation, init_timeout_s: float, wait_for_freeze: bool
    ) -> Served:
        failure = self._init_outcome_locked(self._init_deadline(init_timeout_s))
        if failure is None and self.state == SNAPSHOT:
            failure = self._restore_outcome_locked(init_timeout_s)
        if failure is not None:
            return self._init_failure_locked(failure, invocation.request_id)

        cold = self.invocations == 0
        init_duration_ms = restore_duration_ms = None
        if cold and self.init_done_ns is not None:
            init_duration_ms = (self.init_done_ns - self.spawn_start_ns) / 1e6
        if cold and self.restore_start_ns is not None and self.restored_next_ns is not None:
            restore_duration_ms = (self.restored_next_ns - self.restore_start_ns) / 1e6
        timeout_s = self.function.timeout_s
        self._thaw_locked()
        invocation.delivered_ns = time.time_ns()
        invocation.deadline_ms = invocation.delivered_ns // 1_000_000 + int(timeout_s * 1000)
        deadline = time.monotonic() + timeout_s
        self.state = INVOKING
        self._current = invocation
        self._pending = invocation
        self.invocations += 1
        # Counted now: once the response is in, another request may claim and invoke the
        # environment before this thread runs again.
        delivered_as = self.invocations
        self.request_ids.append(invocation.request_id)
        self._queue_for_extensions_locked(
            {
                "eventType": "INVOKE",
                "deadlineMs": invocation.deadline_ms,
                "requestId": invocation.request_id,
                "invokedFunctionArn": self.function.function_arn,
                "tracing": {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id},
            }
        )
        self._started_locked(invocation)

        answered = self._wait_locked(lambda: invocation.done or self.state == DEAD, deadline)
        # Without a response, the environment died under the invocation, or it timed out.
        served = served_from(
            invocation,
            cold=cold,
            before_timeout=answered,
            end_reason=self.end_reason,
            timeout_s=timeout_s,
            init_duration_ms=init_duration_ms,
            restore_duration_ms=restore_duration_ms,
        )
        timed_out = served.outcome == truth.TIMEOUT
        if timed_out:
            self._log(f"{invocation.request_id} Task timed out after {timeout_s:.2f} seconds")
        self._current = None
        self._pending = None
        self._report_locked(invocation.request_id, served)
        if timed_out:
            # Reset after its REPORT, so that telemetry subscribers still get it.
            self._shutdown_locked("timeout", "timeout")

        if wait_for_freeze and self.state != DEAD:
            settled = self._wait_locked(
                lambda: (
                    self.state in (DEAD, SHUTDOWN)
                    or self.invocations != delivered_as
                    or (self.state == IDLE and (self.frozen or self.reserved))
                ),
                # A response just before the deadline still leaves the runtime a moment
                # to ask for its next event; the slack keeps that from being a timeout.
                max(deadline, time.monotonic() + SETTLE_SLACK_S),
            )
            if not settled:
                # Extensions' work after the response counts against the timeout: an
                # environment still busy at the deadline is reset, as on Lambda.
                waiting = sum(ext.settled for ext in self._extensions)
                self._log(
                    f"{invocation.request_id} Environment did not settle after its response "
                    f"(state {self.state}, runtime waiting: {self._runtime_waiting}, "
                    f"extensions waiting: {waiting}/{len(self._extensions)}, "
                    f"{(time.time_ns() - invocation.end_ns) / 1e6:.0f} ms after the response)"
                )
                self._shutdown_locked("timeout", "timeout")
        return served

    def _started_locked(self, invocation: Invocation) -> None:
        """The START line of an invocation handed over, and its ``platform.start``."""
        self._log_file.start(invocation.request_id)
        self._telemetry.publish(
            platform_events.START,
            platform_events.start(invocation.request_id, invocation.trace_id),
            invocation.delivered_ns or None,
        )

    def _report_locked(self, request_id: str, served: Served) -> None:
        """The END and REPORT lines of ``served`` (with the process's peak memory now),
        and the same figures as ``platform.runtimeDone`` and ``platform.report``."""
        figures = report_figures(
            served, self.function.memory_mb, self.pid, self.initialization_type
        )
        self._log_file.end(request_id, figures)
        self._telemetry.publish(
            platform_events.RUNTIME_DONE,
            platform_events.runtime_done(request_id, served, figures),
            served.end_ns,
        )
        self._telemetry.publish(
            platform_events.REPORT, platform_events.report(request_id, served, figures)
        )

    # -- the Runtime API (RuntimeApiBackend) -------------------------------------------

    def runtime_next(self, peer: Peer | None = None) -> Reply:
        """``invocation/next``: settle (maybe freeze), then wait for the next event."""
        with self._cond:
            if self.state == DEAD:
                return self._gone()
            now = time.time_ns()
            if self.first_next_ns is None:
                self.first_next_ns = now
            if self.state == RESTORING and self.restored_next_ns is None:
                self.restored_next_ns = now
            self._runtime_waiting = True
            self._settle_locked()
            self._wait_locked(lambda: self.state == DEAD or self._pending is not None, None)
            self._runtime_waiting = False
            invocation = self._pending
            if invocation is None:
                return self._gone()
            self._pending = None
            return event_reply(invocation, self.function.function_arn)

    def _finish_locked(self, request_id: str) -> Invocation | None:
        invocation = self._current
        if invocation is None or invocation.request_id != request_id or invocation.done:
            return None
        invocation.done = True
        invocation.end_ns = time.time_ns()
        self.state = POST_INVOKE
        # The environment may be claimed again as soon as it settles.
        self.claimed_by = None
        self._current = None
        self._cond.notify_all()
        return invocation

    def runtime_response(self, request_id: str, body: bytes) -> Reply:
        """``invocation/{id}/response``."""
        with self._cond:
            current = self._current
            if current is not None and current.request_id == request_id:
                current.response = body
            if self._finish_locked(request_id) is None:
                return Reply.error(400, "InvalidRequestID", f"no invocation {request_id}")
            return ACCEPTED

    def runtime_error(self, request_id: str, error_type: str | None, body: bytes) -> Reply:
        """``invocation/{id}/error``."""
        with self._cond:
            current = self._current
            if current is not None and current.request_id == request_id:
                current.error = body or b"{}"
                parsed = parse_payload(current.error)
                current.error_type = error_type or (
                    parsed.get("errorType") if isinstance(parsed, dict) else None
                )
            if self._finish_locked(request_id) is None:
                return Reply.error(400, "InvalidRequestID", f"no invocation {request_id}")
            return ACCEPTED

    def runtime_init_error(self, error_type: str | None, body: bytes) -> Reply:
        """``init/error``: INIT failed; the runtime exits next."""
        with self._cond:
            if self.state not in (INIT, RESTORING):
                return Reply.error(403, "InvalidStateTransition", f"not in INIT ({self.state})")
            self._record_init_error_locked(error_type, body, "init-error")
            return ACCEPTED

    def runtime_restore_next(self) -> Reply:
        """``restore/next``: INIT done under snap-start; answered when restored."""
        with self._cond:
            if self.init_type != SNAP_START:
                return Reply.error(
                    403,
                    "InvalidStateTransition",
                    "restore/next is only for snap-start environments",
                )
            if self.state == DEAD:
                return self._gone()
            if self.first_next_ns is None:
                self.first_next_ns = time.time_ns()
            self._runtime_at_restore = True
            self._settle_locked()
            self._wait_locked(lambda: self.state == DEAD or self._restore_requested, None)
            self._runtime_at_restore = False
            if self.state == DEAD:
                return self._gone()
            self.restore_done_ns = time.time_ns()
            return Reply(200, b"")

    def runtime_restore_error(self, error_type: str | None, body: bytes) -> Reply:
        """``restore/error``: an after-restore hook failed; the runtime exits next."""
        with self._cond:
            self._record_init_error_locked(error_type, body, "restore-error")
            return ACCEPTED
