"""The OpenTelemetry sink: records become OTLP spans and FaaS metrics.

Nothing here runs at INIT. The sink queues each finished invocation record; the spans
and points are built from the recorded timestamps, encoded as OTLP JSON and sent when the
queue is drained: after the response (from the internal extension's thread) or, in
``sync`` mode, before the handler returns, bounded by the flush timeout and the
invocation's remaining time. The export path imports no OpenTelemetry package (a
function's own OpenTelemetry, of whatever version, is left alone): only a sampler named
by ``OTEL_TRACES_SAMPLER`` and exporters handed in by the caller use the SDK.

Per DESIGN.md §2: ``lambda.init`` (INIT start from the OS to INIT end) with a
``lambda.import`` child per import at or above the import threshold, both in the trace of
the environment's first invocation; the invocation span (SERVER, named after the
function) continuing the incoming trace context; and the FaaS and lifecycle metrics, with
delta temporality unless ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` says
otherwise.
"""

from __future__ import annotations

import _thread
import os
import time

from lifecycle_probe._safe import report_failure, start_daemon_thread, warn_once
from lifecycle_probe.probe_threads import mark_probe_thread, probe_work
from lifecycle_probe.sinks import Sink

# This module is imported at INIT (when @probe builds its sinks): only what a bare
# interpreter has loaded may be imported at its top. pipeline.py, which translates
# records into telemetry, comes in at the first drain.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from _queue import SimpleQueue
    from collections.abc import Sequence

    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter

    from lifecycle_probe.config import Config
    from lifecycle_probe.extension import InternalExtension
    from lifecycle_probe.rare_records import InitFailureRecord
    from lifecycle_probe.records import InvocationRecord
    from lifecycle_probe.sinks.otel.exporters import Exporter
    from lifecycle_probe.sinks.otel.pipeline import Pipeline

__all__ = ["OtelSink"]


# (no state of its own: one block object serves every drain)
_PROBE_WORK = probe_work()

# Records kept while exports cannot keep up (a collector down for a long while).
MAX_QUEUED = 1000
# How far past its deadline the sink's thread may still be in a drain before a sync caller
# stops waiting for it: a drain may run over by an export's minimum time (0.1 s) legitimately.
HUNG_AFTER_S = 0.25


class OtelSink(Sink):
    """Turns invocation records into OTLP spans and metrics for one or more exporters.

    ``exporters`` are ``otlp`` and/or ``otlp-file``. Tests pass ``span_exporter`` and
    ``metric_exporter`` (OpenTelemetry SDK exporters, e.g. the SDK's ``InMemorySpanExporter``
    and ``lifecycle_probe.sinks.otel.memory.InMemoryMetricExporter``) or ``exporter`` (a
    destination of the probe's own, e.g. ``exporters.InMemoryExporter``) instead.
    ``isolate_exports`` runs each drain on the sink's own thread so that the caller's wait
    is bounded even when an exporter hangs (a collector that never answers, a file on a
    stuck network share); by default every named exporter gets that, injected ones do not.
    """

    name = "otel"

    def __init__(
        self,
        config: Config,
        exporters: Sequence[str] = ("otlp",),
        *,
        span_exporter: SpanExporter | None = None,
        metric_exporter: MetricExporter | None = None,
        exporter: Exporter | None = None,
        isolate_exports: bool | None = None,
    ) -> None:
        self._config = config
        # (read at every sync flush: worked out once)
        self._flush_timeout_s = config.flush_timeout_ms / 1000
        # An in-memory exporter cannot hang: handing its drain to a thread would only add
        # a thread switch (~0.1 ms here) to every sync flush.
        self._isolate = bool(exporters) if isolate_exports is None else isolate_exports
        self._exporters = tuple(exporters)
        self._span_exporter = span_exporter
        self._metric_exporter = metric_exporter
        self._exporter = exporter
        self._queue: list[InvocationRecord] = []
        # A failed INIT waiting for its export (at most one per process, in practice).
        self._failures: list[InitFailureRecord] = []
        self._queue_lock = _thread.allocate_lock()
        self._drain_lock = _thread.allocate_lock()
        self._pipeline: Pipeline | None = None
        self._pid = os.getpid()
        self.dropped = 0
        # Records dropped from the queue, not yet counted in the pipeline's metric.
        self._unreported_drops = 0
        # The drain requests to the sink's thread: made with the thread, at the first drain.
        self._requests: SimpleQueue[_DrainRequest | None]
        self._worker_pid: int | None = None
        # The deadline of the drain the sink's thread is in (monotonic), None when idle.
        self._busy_until: float | None = None
        # Set by the flush coordinator when an internal extension drains after the response.
        self.extension: InternalExtension | None = None
        # OpenTelemetry's own off switch, honoured as every OTel SDK user expects.
        self.disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"

    def _forked(self) -> None:
        # A child of fork (a Lambda Managed Instances worker) may have inherited a lock
        # held by a thread that does not exist in it: start over with fresh ones. What
        # the parent had queued, waiting or counted is the parent's to export (the child
        # would send it twice), and its exporters' connections are the parent's sockets:
        # the child builds a pipeline of its own at its first drain.
        self._pid = os.getpid()
        self._queue_lock = _thread.allocate_lock()
        self._drain_lock = _thread.allocate_lock()
        self._worker_pid = None
        self._busy_until = None  # the parent's thread, not here
        self._queue = []
        self._failures = []
        if self._pipeline is not None:
            self._pipeline.abandon()
            self._pipeline = None

    def export(self, record: InvocationRecord) -> None:
        if self.disabled:
            return
        if self._pid != os.getpid():
            self._forked()
        extension = self.extension
        if extension is not None and extension.registered:
            self._enqueue(record)  # drained after the response, by the extension's thread
            return
        if not self._isolate:
            # A destination that cannot hang (in memory, a local file not isolated): the
            # drain runs here, on the caller's thread, with no hand-off and none of the
            # checks the thread needs (a drain of ours that hangs: there is none to wait
            # for). One clock read bounds it, as drain() would.
            try:
                self._export_inline(record, time.monotonic() + self.sync_budget_s(record))
            except Exception as exc:
                report_failure("OpenTelemetry export", exc)
            return
        self._enqueue(record)
        self.drain(0.0 if self._hung() else self.sync_budget_s(record))

    def _enqueue(self, record: InvocationRecord) -> None:
        with self._queue_lock:
            self._append_locked(record)

    def _append_locked(self, record: InvocationRecord) -> None:
        if len(self._queue) >= MAX_QUEUED:
            # Exports keep hanging: keep memory bounded, newest first; counted in
            # lifecycle.telemetry.dropped at the next drain that gets through.
            lost = self._queue.pop(0)
            self.dropped += 1
            self._unreported_drops += 1
            if lost.platform_evicted:
                # Lambda's reports it carried the count of are not lost uncounted: the
                # count goes on with the oldest record still waiting (or this one).
                if self._queue:
                    self._queue[0] = _carrying(self._queue[0], lost.platform_evicted)
                else:
                    record = _carrying(record, lost.platform_evicted)
            warn_once(
                "otel:queue-full",
                "lifecycle_probe: %d invocation records wait for the OpenTelemetry "
                "export (it hangs?); dropping the oldest, counted in "
                "lifecycle.telemetry.dropped (this warning is shown once)",
                MAX_QUEUED,
            )
        self._queue.append(record)

    def _hung(self) -> bool:
        """True while the sink's thread is still in a drain well past that drain's deadline:
        an exporter that does not keep to its bound (a DNS lookup that hangs: getaddrinfo
        takes no timeout; an SDK exporter that ignores its own). Each caller waiting for
        it would pay its whole budget at every invocation; the channels' backoff cannot
        help until the export returns. The record stays queued for the drain after it."""
        busy_until = self._busy_until
        return (
            busy_until is not None
            and self._worker_pid == os.getpid()
            and time.monotonic() > busy_until + HUNG_AFTER_S
        )

    def export_init_failure(self, failure: InitFailureRecord, timeout_s: float) -> None:
        """Export a failed INIT now: its ``lambda.init`` span, its imports and
        ``faas.init_errors``, waiting at most ``timeout_s`` (the process exits next).

        Whatever else is queued goes along. The export is set up on the sink's own thread,
        inside the bound: an export that has not finished by then is abandoned with the
        process.
        """
        if self.disabled:
            return
        if self._pid != os.getpid():
            self._forked()
        with self._queue_lock:
            self._failures.append(failure)
        self.drain(timeout_s)

    def sync_budget_s(self, record: InvocationRecord) -> float:
        """How long a flush before the response may take: the flush timeout, and never
        more than the invocation's remaining time (less a margin for the response)."""
        budget = self._flush_timeout_s
        deadline_ns = record.deadline_ns
        if deadline_ns is not None:
            remaining = (deadline_ns - time.time_ns()) / 1e9 - 0.05
            if remaining < budget:
                budget = remaining if remaining > 0.0 else 0.0
        return budget

    def drain(self, timeout_s: float) -> bool:
        """Build spans and metrics of every queued record and export them; wait at most
        ``timeout_s``. Returns True when everything was exported in that time.

        The work runs on the sink's own thread: an exporter that hangs (a collector that
        never answers) keeps that thread, never the caller, past the bound. What it could
        not export stays queued for the next drain.
        """
        if self._pid != os.getpid():
            self._forked()
        if not self._isolate:
            try:
                return self._drain_now(time.monotonic() + timeout_s)
            except Exception as exc:
                report_failure("OpenTelemetry export", exc)
                return False
        request = _DrainRequest(time.monotonic() + timeout_s)
        self._ensure_worker()
        self._requests.put(request)
        return request.wait(timeout_s)

    def _ensure_worker(self) -> None:
        with self._queue_lock:
            if self._worker_pid == os.getpid():
                return
            # First drain, or a forked child: the parent's thread is not here. One thread
            # per sink and process, never one per call; a daemon, never waited for at exit.
            self._worker_pid = os.getpid()
            with probe_work():  # threading or _queue, if imported here, are the probe's
                # (_queue is a shared library: loaded here, at the first drain, not at INIT)
                from _queue import SimpleQueue

                self._requests = SimpleQueue()
                start_daemon_thread(self._work, "lifecycle-probe-otel")

    def _work(self) -> None:
        try:
            # The export's imports are the probe's, and so are its connections to the collector.
            mark_probe_thread()
        except Exception as exc:
            report_failure("OpenTelemetry export thread", exc)
        while True:
            requests = [self._requests.get()]
            # Requests that queued up while an export hung: one drain serves them all.
            while not self._requests.empty():
                requests.append(self._requests.get())
            waiting = [request for request in requests if request is not None]
            ok = False
            try:
                if waiting:
                    deadline = max(request.deadline for request in waiting)
                    self._busy_until = deadline
                    ok = self._drain_now(deadline)
            except BaseException as exc:  # this thread must outlive any exporter's error
                report_failure("OpenTelemetry export", exc)
            finally:
                self._busy_until = None
                for request in waiting:
                    request.finish(ok)
            if None in requests:
                return

    def _export_inline(self, record: InvocationRecord, deadline: float) -> bool:
        """Build and export ``record`` on the calling thread, by ``deadline``: with nothing
        else waiting (every sync invocation but the first), straight to the pipeline,
        without the queue, its lock and the swaps of a drain."""
        with self._drain_lock, _PROBE_WORK:
            pipeline = self._pipeline
            # (read without the queue's lock: what is added meanwhile goes with the next)
            if pipeline is None or self._queue or self._failures or self._unreported_drops:
                return self._drain_locked(deadline, record)
            pipeline.take((record,))
            return pipeline.flush_by(deadline)

    def _drain_now(self, deadline: float) -> bool:
        """Build and export what is queued, by ``deadline`` (monotonic)."""
        with self._drain_lock, _PROBE_WORK:
            return self._drain_locked(deadline, None)

    def _drain_locked(self, deadline: float, record: InvocationRecord | None) -> bool:
        """:meth:`_drain_now` with the drain's lock held; ``record`` (an inline sync
        export's) joins what is queued, after it."""
        with self._queue_lock:
            if record is not None:
                self._append_locked(record)
            records, self._queue = self._queue, []
            failures, self._failures = self._failures, []
            drops, self._unreported_drops = self._unreported_drops, 0
        pipeline = self._pipeline
        if pipeline is None:
            if not records and not failures:
                return True  # (a drop implies a full queue: none here)
            from lifecycle_probe.sinks.otel.pipeline import Pipeline

            pipeline = self._pipeline = Pipeline(
                self._config,
                records[0].function if records else failures[0].function,
                self._exporters,
                self._span_exporter,
                self._metric_exporter,
                self._exporter,
            )
        # The building, each record behind its own guard, and the export.
        pipeline.take(records, failures, drops)
        return pipeline.flush_by(deadline)

    def flush(self, timeout_s: float) -> None:
        self.drain(timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export what waits, then stop the sink's thread and the exporters, waiting at
        most ``timeout_s`` in all."""
        if self._pid != os.getpid():
            self._forked()  # a child never shuts down its parent's exporters
        deadline = time.monotonic() + timeout_s
        self.drain(timeout_s)
        if self._worker_pid == os.getpid():
            self._requests.put(None)
            self._worker_pid = None
        if not self._drain_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return  # an export hangs; the process is ending anyway
        try:
            if self._pipeline is not None:
                self._pipeline.shutdown()
                self._pipeline = None
        finally:
            self._drain_lock.release()


class _DrainRequest:
    """One drain asked of the sink's thread; the caller waits on it, bounded."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.ok = False
        self._done = _thread.allocate_lock()
        self._done.acquire()

    def finish(self, ok: bool) -> None:
        self.ok = ok
        self._done.release()

    def wait(self, timeout_s: float) -> bool:
        return self._done.acquire(timeout=max(0.0, timeout_s)) and self.ok


def _carrying(record: InvocationRecord, evicted: int) -> InvocationRecord:
    """``record`` also carrying the count of ``evicted`` reports of Lambda's given up."""
    result: InvocationRecord = record.replace(platform_evicted=record.platform_evicted + evicted)
    return result
