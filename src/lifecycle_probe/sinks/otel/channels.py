"""One channel per destination: what it has not taken yet, sent again, or given up and
counted.

A failed export (a collector down, a request cut off by a freeze that fails after the
thaw) is not lost: it is sent again, unchanged, with the next flush, so nothing buffered
is lost across a freeze. Spans refused ``MAX_ATTEMPTS`` flushes in a row, or beyond
``MAX_WAITING_SPANS``, are dropped and counted; metric exports beyond
``MAX_WAITING_METRIC_EXPORTS``.

A destination that did not answer in time (a collector that accepts and never replies, an
address whose connection attempt times out) is not tried again for a while: a
:class:`Backoff` of 1 s doubling to 60 s, reset when an attempt ends in time. Without it
every flush would wait out the flush timeout again, on every invocation, for as long as
the collector stays silent. What waits meanwhile is kept within the bounds above.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lifecycle_probe._safe import report_failure, warn_once
from lifecycle_probe.sinks.otel.failures import (
    QUEUE_FULL,
    TIMEOUT,
    ExportError,
    dropped_reason,
    error_kind,
    warn_export_failed,
)
from lifecycle_probe.sinks.otel.metrics import CUMULATIVE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lifecycle_probe.sinks.otel.exporters import Exporter
    from lifecycle_probe.sinks.otel.metrics import MetricData, Metrics
    from lifecycle_probe.sinks.otel.spans import Span

# Spans kept for an exporter that cannot take them (a collector down for a while). Whole
# invocations are dropped, oldest first, never the one just recorded.
MAX_WAITING_SPANS = 2048
# Drains in a row a destination may refuse the same spans before they are dropped.
MAX_ATTEMPTS = 3
# Metric exports kept for a destination that cannot take them (one per flush).
MAX_WAITING_METRIC_EXPORTS = 100
# After an attempt that timed out, a destination rests this long before the next one,
# doubling after each attempt that times out again, up to BACKOFF_MAX_S. A minute bounds
# what a collector back from an outage waits for: the next flush after it is tried again.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0

__all__ = [
    "BACKOFF_FIRST_S",
    "BACKOFF_MAX_S",
    "MAX_ATTEMPTS",
    "MAX_WAITING_METRIC_EXPORTS",
    "MAX_WAITING_SPANS",
    "Backoff",
    "Channel",
]


class Backoff:
    """When a destination that timed out may be tried again (a circuit breaker).

    Only a timeout opens it: an attempt that waited out its whole budget is what makes a
    silent collector cost every flush its timeout. A failure that comes back at once (a
    refused connection, an HTTP error) costs the flush nothing, and trying it again at
    every flush gives what waits its best chance before Lambda reaps the environment.
    Monotonic time keeps running while the environment is frozen: the first flush after a
    thaw past the interval tries again, as it should (the collector may be back).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.interval_s = 0.0
        self.retry_at = 0.0
        self.timeouts = 0

    def resting(self) -> bool:
        """True while the destination must not be tried."""
        return self.interval_s > 0 and self._clock() < self.retry_at

    def timed_out(self) -> None:
        self.timeouts += 1
        if self.interval_s <= 0:
            self.interval_s = BACKOFF_FIRST_S
        else:
            self.interval_s = min(self.interval_s * 2, BACKOFF_MAX_S)
        # From the end of the attempt: the interval is time the destination is spared.
        self.retry_at = self._clock() + self.interval_s

    def answered(self) -> None:
        self.interval_s = 0.0
        self.retry_at = 0.0
        self.timeouts = 0


class Channel:
    """One destination, and what it has not taken yet.

    An export that failed is sent again unchanged at the next flush: when the failure was
    ambiguous (a request cut off by a freeze, whose reply was lost), the collector may
    have it already, and identical spans (same ids) and identical points (same interval)
    can be told apart from new ones, where counts merged into a longer interval could not.
    What is given up is counted in ``lifecycle.telemetry.dropped`` (in invocations, by
    reason and signal), exported with the next metric export that goes through.
    """

    def __init__(self, exporter: Exporter, metrics: Metrics) -> None:
        self.exporter = exporter
        self.metrics = metrics
        self.takes_spans = exporter.takes_spans
        self.takes_metrics = exporter.takes_metrics
        # The spans of each invocation not yet taken, oldest first.
        self.waiting: list[list[Span]] = []
        self.waiting_spans = 0
        self.refusals = 0
        self.dropped_spans = 0
        # Metric exports not yet taken, oldest first (delta: each its own interval), with
        # how many invocations each measured.
        self.waiting_metrics: list[tuple[list[MetricData], int]] = []
        self.dropped_metric_exports = 0
        self.backoff = Backoff()
        # Set by an export of this flush that failed with a timeout.
        self._timed_out = False

    def keep(self, spans: list[Span]) -> None:
        if not self.takes_spans or not spans:
            return
        self.waiting.append(spans)
        self.waiting_spans += len(spans)
        while self.waiting_spans > MAX_WAITING_SPANS and len(self.waiting) > 1:
            oldest = self.waiting.pop(0)
            self.waiting_spans -= len(oldest)
            self._count_dropped(len(oldest), 1, QUEUE_FULL)

    def count_dropped(self, invocations: int, reason: str, signals: Sequence[str]) -> None:
        """Count ``invocations`` whose telemetry of ``signals`` never reached this
        channel (given up by the sink before it had spans or points)."""
        if not self.takes_metrics:
            return
        for signal in signals:
            if signal == "spans" and not self.takes_spans:
                continue
            self.metrics.record_dropped(reason, signal, invocations)

    def _count_dropped(self, spans: int, invocations: int, reason: str) -> None:
        self.dropped_spans += spans
        if self.takes_metrics:
            self.metrics.record_dropped(reason, "spans", invocations)
        warn_once(
            "otel:dropped-spans",
            "lifecycle_probe: the span exporter did not take spans for %d flushes or %d "
            "spans; dropping the oldest, counted in lifecycle.telemetry.dropped (this "
            "warning is shown once)",
            MAX_ATTEMPTS,
            MAX_WAITING_SPANS,
        )

    def _failed(self, signal: str, exc: Exception) -> str:
        kind = exc.kind if isinstance(exc, ExportError) else error_kind(exc)
        warn_export_failed(signal, self.exporter.destinations[signal], kind)
        if dropped_reason(kind) == TIMEOUT:
            self._timed_out = True
        return kind

    def export(self, deadline: float, min_s: float) -> bool:
        """Spans, then metrics, each given what is left until ``deadline`` (at least
        ``min_s``). True when everything was taken.

        While the destination rests after a timeout nothing is attempted and nothing is
        closed: spans wait as they are (a skipped flush is no refusal), and metric points
        keep aggregating into the open interval, which goes out whole with the next
        attempt. A timeout in the spans' export skips the metrics' in the same flush: the
        destination that did not answer one would take the rest of the budget again.
        """
        backoff = self.backoff
        if backoff.interval_s > 0 and backoff.resting():
            return False
        self._timed_out = False
        # (the clock is read only for a signal that has something to send)
        ok = True
        if self.takes_spans and self.waiting:
            ok = self.export_spans(max(deadline - time.monotonic(), min_s))
        if not self._timed_out and self.takes_metrics:
            ok = self.export_metrics(max(deadline - time.monotonic(), min_s)) and ok
        if self._timed_out:
            backoff.timed_out()
            warn_once(
                f"otel:backoff:{self.exporter.destinations['spans']}",
                "lifecycle_probe: OpenTelemetry export to %s timed out; it is tried again "
                "after %.0f s, then at intervals doubling to %.0f s while it does not answer "
                "(what waits is kept until then; this warning is shown once)",
                self.exporter.destinations["spans"],
                BACKOFF_FIRST_S,
                BACKOFF_MAX_S,
            )
        elif backoff.interval_s > 0 or backoff.timeouts:
            backoff.answered()  # (a destination that never timed out has nothing to reset)
        return ok

    def export_spans(self, timeout_s: float) -> bool:
        if not self.takes_spans or not self.waiting:
            return True
        waiting = self.waiting
        # One invocation's spans (every sync flush): its own list, not copied again.
        batch = waiting[0] if len(waiting) == 1 else [span for spans in waiting for span in spans]
        try:
            self.exporter.export_spans(batch, timeout_s)
        except Exception as exc:
            kind = self._failed("spans", exc)
            self.refusals += 1
            if self.refusals < MAX_ATTEMPTS:
                return False
            self._count_dropped(len(batch), len(self.waiting), dropped_reason(kind))
            self._forget_spans()
            return False
        self._forget_spans()
        return True

    def _forget_spans(self) -> None:
        self.waiting = []
        self.waiting_spans = 0
        self.refusals = 0

    def export_metrics(self, timeout_s: float) -> bool:
        if not self.takes_metrics:
            return True
        metrics = self.metrics
        now_ns = time.time_ns()
        data = metrics.collect(now_ns)
        waiting = self.waiting_metrics
        if data is not None:
            measured = metrics.recorded
            # The interval is closed whatever the export does: a failed one is resent as is.
            metrics.exported(now_ns)
            if metrics.temporality == CUMULATIVE:
                # The newest totals carry everything before
                waiting = self.waiting_metrics = [(data, measured)]
            else:
                waiting.append((data, measured))
                if len(waiting) > MAX_WAITING_METRIC_EXPORTS:
                    self._bound_waiting_metrics()
        export = self.exporter.export_metrics
        while waiting:
            try:
                export(waiting[0][0], timeout_s)
            except Exception as exc:
                self._failed("metrics", exc)
                return False
            del waiting[0]
        return True

    def _bound_waiting_metrics(self) -> None:
        overflow = len(self.waiting_metrics) - MAX_WAITING_METRIC_EXPORTS
        if overflow <= 0:
            return
        lost = sum(count for _, count in self.waiting_metrics[:overflow])
        del self.waiting_metrics[:overflow]
        self.dropped_metric_exports += overflow
        # Counted in the next interval, which goes out with the next export.
        self.metrics.record_dropped(QUEUE_FULL, "metrics", lost)
        warn_once(
            "otel:dropped-metrics",
            "lifecycle_probe: the metric exporter did not take the last %d exports; dropping "
            "the oldest, counted in lifecycle.telemetry.dropped (this warning is shown once)",
            MAX_WAITING_METRIC_EXPORTS,
        )

    def shutdown(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception as exc:
            report_failure("OpenTelemetry exporter shutdown", exc)
