"""Records to OpenTelemetry data, handed to the OTLP exporters: the export's heavy part.

Imported at the first drain (after the response, or in a sync flush), never at INIT.
``spans.py`` builds each invocation's finished spans and ``metrics.py`` aggregates its
measurements; this module owns the exporters and what is waiting for them.

Each exporter has a channel of its own. A failed export (a collector down, a request cut
off by a freeze that fails after the thaw) is not lost: it is sent again, unchanged, with
the next flush, so nothing buffered is lost across a freeze. Spans refused
``MAX_ATTEMPTS`` flushes in a row, or beyond ``MAX_WAITING_SPANS``, are dropped and
counted; metric exports beyond ``MAX_WAITING_METRIC_EXPORTS``.
"""

from __future__ import annotations

import _thread
import errno
import os
import resource
import time
from typing import IO, TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from lifecycle_probe._safe import report_failure, warn_once
from lifecycle_probe.sinks.otel.failures import (
    BUILD_FAILED,
    QUEUE_FULL,
    ExportNote,
    dropped_reason,
    error_kind,
    quiet,
    quiet_sdk_loggers,
    redact_url,
    warn_export_failed,
)
from lifecycle_probe.sinks.otel.metrics import Metrics
from lifecycle_probe.sinks.otel.spans import Spans, env_sampler

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

    from lifecycle_probe.config import Config
    from lifecycle_probe.records import FunctionFacts, InitFailureRecord, InvocationRecord

INSTRUMENTATION_SCOPE = "lifecycle_probe"
_DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
_DEFAULT_OTLP_FILE = "lifecycle-probe.otlp.jsonl"
# Spans kept for an exporter that cannot take them (a collector down for a while). Whole
# invocations are dropped, oldest first, never the one just recorded.
MAX_WAITING_SPANS = 2048
# Drains in a row a span exporter may refuse the same spans before they are dropped.
MAX_ATTEMPTS = 3
# Metric exports kept for a metric exporter that cannot take them (one per flush).
MAX_WAITING_METRIC_EXPORTS = 100
# The time a metric export is given even when the spans' export used up the flush's.
MIN_METRIC_EXPORT_S = 0.1


class _Channel:
    """One destination: its exporters, and what it has not taken yet.

    An export that failed is sent again unchanged at the next flush: when the failure was
    ambiguous (a request cut off by a freeze, whose reply was lost), the collector may
    have it already, and identical spans (same ids) and identical points (same interval)
    can be told apart from new ones, where counts merged into a longer interval could not.
    What is given up is counted in ``lifecycle.telemetry.dropped`` (in invocations, by
    reason and signal), exported with the next metric export that goes through.
    """

    def __init__(
        self,
        span_exporter: SpanExporter | None,
        metric_exporter: MetricExporter | None,
        metrics: Metrics,
        destination: str | None = None,
    ) -> None:
        self.span_exporter = span_exporter
        self.metric_exporter = metric_exporter
        self.metrics = metrics
        # Where each signal goes, as the warnings may show it (no secrets of the endpoint).
        self.destinations = {
            "spans": destination or _destination(span_exporter),
            "metrics": destination or _destination(metric_exporter),
        }
        # The probe's own exporters say why an export failed here, not in the logs.
        self._span_note = quiet(span_exporter) if span_exporter is not None else None
        self._metric_note = quiet(metric_exporter) if metric_exporter is not None else None
        # The spans of each invocation not yet taken, oldest first.
        self.waiting: list[list[ReadableSpan]] = []
        self.waiting_spans = 0
        self.refusals = 0
        self.dropped_spans = 0
        # Kind of the last refusal of the waiting spans, for the dropped metric's reason.
        self._span_failure: str | None = None
        # Metric exports not yet taken, oldest first (delta: each its own interval), with
        # how many invocations each measured.
        self.waiting_metrics: list[tuple[MetricsData, int]] = []
        self.dropped_metric_exports = 0

    def keep(self, spans: list[ReadableSpan]) -> None:
        if self.span_exporter is None or not spans:
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
        if self.metric_exporter is None:
            return
        for signal in signals:
            if signal == "spans" and self.span_exporter is None:
                continue
            self.metrics.record_dropped(reason, signal, invocations)

    def _count_dropped(self, spans: int, invocations: int, reason: str) -> None:
        self.dropped_spans += spans
        if self.metric_exporter is not None:
            self.metrics.record_dropped(reason, "spans", invocations)
        warn_once(
            "otel:dropped-spans",
            "lifecycle_probe: the span exporter did not take spans for %d flushes or %d "
            "spans; dropping the oldest, counted in lifecycle.telemetry.dropped (this "
            "warning is shown once)",
            MAX_ATTEMPTS,
            MAX_WAITING_SPANS,
        )

    def _failed(self, signal: str, note: ExportNote | None, exc: BaseException | None) -> str:
        kind = error_kind(exc) if exc is not None else None
        if note is not None:
            kind = note.take() or kind
        kind = kind or "refused"
        warn_export_failed(signal, self.destinations[signal], kind)
        return kind

    def export_spans(self) -> bool:
        if self.span_exporter is None or not self.waiting:
            return True
        batch = [span for spans in self.waiting for span in spans]
        ok = False
        error: BaseException | None = None
        try:
            ok = self.span_exporter.export(batch) is SpanExportResult.SUCCESS
        except Exception as exc:
            error = exc
        if not ok:
            self._span_failure = self._failed("spans", self._span_note, error)
            self.refusals += 1
            if self.refusals < MAX_ATTEMPTS:
                return False
            self._count_dropped(len(batch), len(self.waiting), dropped_reason(self._span_failure))
        self.waiting = []
        self.waiting_spans = 0
        self.refusals = 0
        return ok

    def export_metrics(self, timeout_s: float) -> bool:
        exporter = self.metric_exporter
        if exporter is None:
            return True
        now_ns = time.time_ns()
        data = self.metrics.collect(now_ns)
        if data is not None:
            measured = self.metrics.recorded
            # The interval is closed whatever the export does: a failed one is resent as is.
            self.metrics.exported(now_ns)
            if self.metrics.temporality is AggregationTemporality.CUMULATIVE:
                # The newest totals carry everything before
                self.waiting_metrics = [(data, measured)]
            else:
                self.waiting_metrics.append((data, measured))
                overflow = len(self.waiting_metrics) - MAX_WAITING_METRIC_EXPORTS
                if overflow > 0:
                    lost = sum(count for _, count in self.waiting_metrics[:overflow])
                    del self.waiting_metrics[:overflow]
                    self.dropped_metric_exports += overflow
                    # Counted in the next interval, which goes out with the next export.
                    self.metrics.record_dropped(QUEUE_FULL, "metrics", lost)
                    warn_once(
                        "otel:dropped-metrics",
                        "lifecycle_probe: the metric exporter did not take the last %d "
                        "exports; dropping the oldest, counted in lifecycle.telemetry.dropped "
                        "(this warning is shown once)",
                        MAX_WAITING_METRIC_EXPORTS,
                    )
        while self.waiting_metrics:
            ok = False
            error: BaseException | None = None
            try:
                result = exporter.export(
                    self.waiting_metrics[0][0], timeout_millis=timeout_s * 1000
                )
                ok = result is MetricExportResult.SUCCESS
            except Exception as exc:
                error = exc
            if not ok:
                self._failed("metrics", self._metric_note, error)
                return False
            del self.waiting_metrics[0]
        return True

    def shutdown(self) -> None:
        for exporter in (self.span_exporter, self.metric_exporter):
            if exporter is not None:
                try:
                    exporter.shutdown()
                except Exception as exc:
                    report_failure("OpenTelemetry exporter shutdown", exc)


def _destination(exporter: object) -> str:
    """An exporter's endpoint without userinfo or query string, else its class name."""
    endpoint = getattr(getattr(exporter, "_client", None), "_endpoint", None)
    if isinstance(endpoint, str):
        return redact_url(endpoint)
    return type(exporter).__name__


class Pipeline:
    """Spans and metrics of invocation records, and the channels that export them."""

    def __init__(
        self,
        config: Config,
        function: FunctionFacts,
        exporters: Sequence[str],
        span_exporter: SpanExporter | None,
        metric_exporter: MetricExporter | None,
    ) -> None:
        self._config = config
        # The SDK exporters' own lines about the probe's exports stay out of the logs
        # (failures are said once, by the channels).
        quiet_sdk_loggers()
        otel_resource = _resource(function)
        scope = InstrumentationScope(INSTRUMENTATION_SCOPE, _probe_version())
        self._stream: _AppendedLines | None = None
        started_ns = time.time_ns()
        self._channels: list[_Channel] = []
        if span_exporter is not None or metric_exporter is not None:
            metrics = Metrics(otel_resource, scope, started_ns)
            self._channels.append(_Channel(span_exporter, metric_exporter, metrics))
        timeout_s = config.flush_timeout_ms / 1000
        # The OTLP file first: a local write takes microseconds, a collector that hangs
        # takes the whole flush budget, after which the environment may be frozen and
        # reaped before the file's turn comes (the soak lost file records that way).
        for name in sorted(exporters, key=lambda name: name != "otlp-file"):
            try:
                spans, metric = self._exporters_for(name, timeout_s)
            except Exception as exc:
                # One destination that cannot be set up (an OTLP file in a read-only
                # directory) must not take the others down with it.
                report_failure(f"OpenTelemetry exporter {name}", exc)
                continue
            metrics = Metrics(otel_resource, scope, started_ns)
            destination = None
            if name == "otlp-file":
                destination = f"the OTLP file {self._config.otlp_file or _DEFAULT_OTLP_FILE}"
            self._channels.append(_Channel(spans, metric, metrics, destination))
        # Lifecycle spans are recorded whatever X-Ray's sampling decision for the request:
        # the trace id is continued, the sampling is ours (OTEL_TRACES_SAMPLER overrides).
        import_min_ns = int(config.import_min_ms * 1_000_000)
        self._spans = Spans(otel_resource, scope, import_min_ns, env_sampler())

    @property
    def dropped_spans(self) -> int:
        return sum(channel.dropped_spans for channel in self._channels)

    def _exporters_for(self, name: str, timeout_s: float) -> tuple[SpanExporter, MetricExporter]:
        if name == "otlp-file":
            from opentelemetry.exporter.otlp.json.file import FileMetricExporter, FileSpanExporter

            path = self._config.otlp_file
            if path is None:
                path = _DEFAULT_OTLP_FILE
                warn_once(
                    "otlp-file:no-path",
                    "lifecycle_probe: LIFECYCLE_PROBE_OTLP_FILE is not set; writing %s",
                    path,
                )
            if self._stream is None:
                self._stream = _AppendedLines(path)
            # _AppendedLines stands in for the IO[str] the exporters expect (write/flush/closed).
            stream: IO[str] = self._stream  # type: ignore[assignment]
            return (
                FileSpanExporter(stream=stream),
                FileMetricExporter(stream=stream),
            )
        from opentelemetry.exporter.otlp.json.http import OTLPMetricExporter, OTLPSpanExporter

        # Both honour OTEL_EXPORTER_OTLP_*; the collector layer listens on localhost:4318.
        endpoint = None
        if not any(
            os.environ.get(v)
            for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        ):
            endpoint = _DEFAULT_OTLP_ENDPOINT + "/v1/traces"
        metrics_endpoint = None
        if not any(
            os.environ.get(v)
            for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        ):
            metrics_endpoint = _DEFAULT_OTLP_ENDPOINT + "/v1/metrics"
        return (
            OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s),
            OTLPMetricExporter(endpoint=metrics_endpoint, timeout=timeout_s),
        )

    # -- records to telemetry --------------------------------------------------------------

    def emit(self, record: InvocationRecord) -> None:
        """Spans and metric points of one finished invocation, kept for the next flush.

        What cannot be built (a bug, a record the SDK refuses) is counted as dropped
        (``build_failed``) for that signal; the other still goes out.
        """
        spans: list[ReadableSpan] | None = None
        invocation_span: tuple[int, int, bool] | None = None
        try:
            spans, invocation_span = self._spans.of(record)
        except Exception as exc:
            report_failure("OpenTelemetry span building", exc)
        rss = _max_rss_bytes()
        for channel in self._channels:
            if spans is None:
                channel.count_dropped(1, BUILD_FAILED, ("spans",))
            else:
                channel.keep(spans)
            if channel.metric_exporter is not None:
                try:
                    channel.metrics.record(record, invocation_span, rss)
                except Exception as exc:
                    report_failure("OpenTelemetry metric recording", exc)
                    channel.count_dropped(1, BUILD_FAILED, ("metrics",))

    def emit_init_failure(self, failure: InitFailureRecord) -> None:
        """The spans and the ``faas.init_errors`` point of a failed INIT, kept for the next
        flush."""
        spans = self._spans.of_init_failure(failure)
        for channel in self._channels:
            channel.keep(spans)
            if channel.metric_exporter is not None:
                channel.metrics.record_init_failure(failure)

    def count_dropped(self, invocations: int, reason: str) -> None:
        """Count ``invocations`` the sink gave up before they reached the pipeline (both
        their spans and their metric points) in every destination."""
        for channel in self._channels:
            channel.count_dropped(invocations, reason, ("spans", "metrics"))

    # -- flushing ---------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Export what every channel holds. True when all of it was taken.

        An expired request (no time left) exports nothing: what waits goes with the next
        flush. Otherwise every channel, and in it spans and then metrics, gets its
        attempt even after the time is up: one slow or failing destination must not starve
        the others. The caller's wait is bounded by the sink (its own thread), and each
        OTLP/HTTP request by the exporters' timeout.
        """
        if timeout_s <= 0:
            return False
        deadline = time.monotonic() + timeout_s
        ok = True
        for channel in self._channels:
            ok = channel.export_spans() and ok
            left_s = max(deadline - time.monotonic(), MIN_METRIC_EXPORT_S)
            ok = channel.export_metrics(left_s) and ok
        return ok

    def shutdown(self) -> None:
        for channel in self._channels:
            channel.shutdown()
        if self._stream is not None:
            self._stream.close()

    def abandon(self) -> None:
        """In a forked child: let go of the parent's pipeline without exporting or
        shutting anything down (the exporters' sockets are the parent's), closing only
        the child's copy of the OTLP file descriptor."""
        if self._stream is not None:
            self._stream.close_inherited()


def _resource(function: FunctionFacts) -> Resource:
    from opentelemetry.sdk.resources import Resource

    attributes: dict[str, Any] = {
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "telemetry.auto.version": _probe_version(),
    }
    defaults: tuple[tuple[str, str | int | None], ...] = (
        ("cloud.region", function.region),
        ("faas.name", function.function_name),
        ("faas.version", function.function_version),
        ("faas.instance", function.log_stream),
        (
            "faas.max_memory",
            None if function.memory_mb is None else function.memory_mb * 1024 * 1024,
        ),
    )
    for key, value in defaults:
        if value is not None:
            attributes[key] = value
    try:
        detected = Resource.create({})  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, SDK facts
    except RuntimeError:
        # At interpreter exit (a handler that raised SystemExit ends the runtime process,
        # and its record goes out from an exit handler), the SDK's detectors cannot get
        # their thread pool ("can't register atexit after shutdown"): the same facts,
        # detected on this thread.
        detected = _resource_without_thread_pool()
    merged = dict(attributes)
    for key, detected_value in detected.attributes.items():
        if key == "service.name" and str(detected_value).startswith("unknown_service"):
            continue  # the function's name says more than the SDK's placeholder
        merged[key] = detected_value
    merged.setdefault("service.name", function.function_name or "unknown_service")
    return Resource(merged)


def _resource_without_thread_pool() -> Resource:
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.version import __version__ as sdk_version

    sdk = Resource(
        {
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": sdk_version,
        }
    )
    return sdk.merge(OTELResourceDetector().detect())


def _probe_version() -> str:
    try:
        from importlib.metadata import version

        return version("lifecycle-probe")
    except Exception:
        return "unknown"


def _max_rss_bytes() -> int | None:
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    except Exception:
        return None


class _AppendedLines:
    """The OTLP file, shared by the span and metric exporters of this process and by other
    processes (every environment of a function may write to one file): each line goes out
    in one ``write`` on an ``O_APPEND`` descriptor, so lines never interleave.

    A file that cannot be opened (its directory missing or read-only) or written (the disk
    full) fails the export, which is then sent again with the next flush, and given up and
    counted like any other failed export: it is opened again at every write until it can
    be, and a line that does not fit is not begun (a torn line would spoil the file for
    every reader).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._lock = _thread.allocate_lock()
        self.closed = False
        try:
            self._open()
        except OSError:
            pass  # said by the export that fails; tried again at the next write

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        with self._lock:
            fd = self._open()
            try:
                space = os.fstatvfs(fd)
                if space.f_bavail * space.f_frsize < len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise
                # No statvfs here (a pipe, /dev/full): the write says it.
            view = memoryview(data)
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError:
                self._cut_torn_line(fd, start, len(data) - len(view))
                raise
        return len(text)

    @staticmethod
    def _cut_torn_line(fd: int, start: int, written: int) -> None:
        # Best effort: take back the part of a line that did not fit, if nothing was
        # appended after it meanwhile.
        if not written:
            return
        try:
            if os.fstat(fd).st_size == start + written:
                os.ftruncate(fd, start)
        except OSError:
            pass

    def flush(self) -> None:
        return None  # every write went straight to the file

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                if self._fd is not None:
                    os.close(self._fd)

    def close_inherited(self) -> None:
        """Close a forked child's copy, without the lock: a parent thread that held it
        at the fork does not exist in the child."""
        if not self.closed:
            self.closed = True
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError:
                    pass
