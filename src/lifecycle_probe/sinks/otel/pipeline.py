"""Records to OpenTelemetry SDK objects: spans, metric measurements, exporters.

Imported at the first drain (after the response, or in a sync flush), never at INIT: this
module and the SDK it loads are the heavy part of the export.
"""

from __future__ import annotations

import _thread
import os
import time
from typing import IO, TYPE_CHECKING, Any

from lifecycle_probe._safe import warn_once
from lifecycle_probe.records import COLD_START_TYPES, ERROR, TIMEOUT
from lifecycle_probe.sinks.otel.trace_context import parse_traceparent, parse_xray

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from opentelemetry.context import Context
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from lifecycle_probe.config import Config
    from lifecycle_probe.imports import ImportRecord
    from lifecycle_probe.records import FunctionFacts, InitRecord, InvocationRecord

INSTRUMENTATION_SCOPE = "lifecycle_probe"

# Histogram buckets in each instrument's own unit (the SDK's defaults are for milliseconds).
# Durations: 1 ms to 15 min, Lambda's longest timeout.
SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# Idle (frozen) time: a second to the hours an environment can be kept.
IDLE_SECONDS = (0.1, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# Memory: 16 MiB to 10 GiB, Lambda's range.
BYTES = tuple(
    float(mib * 1024 * 1024) for mib in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10240)
)
# Reuse: how many invocations an environment has served.
SEQUENCE = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 10000)
_DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"


class Pipeline:
    """The SDK objects: tracer and meter providers, instruments, exporters."""

    def __init__(
        self,
        config: Config,
        function: FunctionFacts,
        exporters: Sequence[str],
        span_exporter: SpanExporter | None,
        metric_reader: MetricReader | None,
    ) -> None:
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        self._config = config
        self._import_min_ns = int(config.import_min_ms * 1_000_000)
        resource = _resource(function)
        self._stream: _AppendedLines | None = None
        span_exporters = [span_exporter] if span_exporter is not None else []
        readers: list[MetricReader] = [metric_reader] if metric_reader is not None else []
        timeout_s = config.flush_timeout_ms / 1000
        for name in exporters:
            spans, metrics = self._exporters_for(name, timeout_s)
            span_exporters.append(spans)
            # math.inf: no background thread; metrics go out when the sink flushes.
            readers.append(
                PeriodicExportingMetricReader(metrics, export_interval_millis=float("inf"))
            )
        # Lifecycle spans are recorded whatever X-Ray's sampling decision for the request:
        # the trace id is continued, the sampling is ours (OTEL_TRACES_SAMPLER overrides).
        sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ALWAYS_ON
        self.tracer_provider = TracerProvider(resource=resource, sampler=sampler)
        for exporter in span_exporters:
            # Spans wait for the sink's flush; the processor never exports on its own timer.
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    exporter, schedule_delay_millis=3_600_000, max_export_batch_size=512
                )
            )
        self.meter_provider = _meter_provider(resource, readers)
        self.tracer = self.tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)
        self._instruments = _Instruments(self.meter_provider)

    def _exporters_for(self, name: str, timeout_s: float) -> tuple[SpanExporter, MetricExporter]:
        temporality = _preferred_temporality()
        if name == "otlp-file":
            from opentelemetry.exporter.otlp.json.file import FileMetricExporter, FileSpanExporter

            path = self._config.otlp_file
            if path is None:
                path = "lifecycle-probe.otlp.jsonl"
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
                FileMetricExporter(stream=stream, preferred_temporality=temporality),
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
            OTLPMetricExporter(
                endpoint=metrics_endpoint, timeout=timeout_s, preferred_temporality=temporality
            ),
        )

    # -- records to telemetry --------------------------------------------------------------

    def emit(self, record: InvocationRecord) -> None:
        """Spans and metric points for one finished invocation."""
        parent = _parent_context(record)
        span = self._invocation_span(record, parent)
        from opentelemetry.trace import set_span_in_context

        inside = set_span_in_context(span)
        if record.init is not None:
            self._init_spans(record.init, inside)
        if record.imports:
            self._import_spans(record.imports, inside)
        span.end(end_time=record.end_ns)
        self._instruments.record(record)

    def _invocation_span(self, record: InvocationRecord, parent: Context | None) -> Span:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        facts = record.facts
        span = self.tracer.start_span(
            record.function.function_name or "lambda.invoke",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=invocation_attributes(record),
            start_time=facts.invoke_start_ns,
        )
        for event in record.events:
            span.add_event(event.name, dict(event.attributes), timestamp=event.time_ns)
        if record.outcome == ERROR:
            if record.exception is not None:
                # Type and stack trace, never the message: messages carry payload values
                # (KeyError('alice@example.com'), f"bad token {token}") and nothing of
                # the payload may reach telemetry.
                span.record_exception(
                    record.exception,
                    attributes={
                        "exception.message": "",
                        "exception.stacktrace": _stack_without_message(record.exception),
                    },
                    timestamp=record.end_ns,
                )
            span.set_status(Status(StatusCode.ERROR, record.error_type))
        elif record.outcome == TIMEOUT:
            span.set_status(Status(StatusCode.ERROR, "timeout"))
        return span

    def _init_spans(self, init: InitRecord, parent: Context) -> None:
        from opentelemetry.trace import set_span_in_context

        attributes: dict[str, Any] = {
            "lifecycle.environment.id": init.environment_id,
            "lifecycle.init_type": init.init_type,
            "lifecycle.init.start_source": init.start_source,
            "lifecycle.init.end_source": init.end_source,
            "lifecycle.init.estimated": init.estimated,
            "lifecycle.restored": init.restored,
            "process.pid": init.pid,
        }
        if init.imports_traced_from_ns is not None:
            attributes["lifecycle.import.traced_from_s"] = max(
                0.0, (init.imports_traced_from_ns - init.start_ns) / 1e9
            )
        span = self.tracer.start_span(
            "lambda.init", context=parent, attributes=attributes, start_time=init.start_ns
        )
        self._import_spans(init.imports, set_span_in_context(span))
        span.end(end_time=init.end_ns)

    def _import_spans(self, imports: Sequence[ImportRecord], parent: Context) -> None:
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        kept: dict[int, Context] = {}
        by_id = {record.import_id: record for record in imports}
        for record in sorted(imports, key=lambda r: r.start_ns):
            if record.end_ns - record.start_ns < self._import_min_ns:
                continue
            # The nearest ancestor with a span of its own, else INIT (or the invocation).
            ancestor = record.parent_id
            context = parent
            while ancestor is not None:
                if ancestor in kept:
                    context = kept[ancestor]
                    break
                above = by_id.get(ancestor)
                ancestor = None if above is None else above.parent_id
            attributes: dict[str, Any] = {
                "code.namespace": record.module,
                "lifecycle.import.self_s": record.self_s,
                "lifecycle.import.origin": record.origin,
            }
            if not record.during_init:
                attributes["lifecycle.import.after_init"] = True
            span = self.tracer.start_span(
                "lambda.import", context=context, attributes=attributes, start_time=record.start_ns
            )
            if record.error_type is not None:
                span.set_status(Status(StatusCode.ERROR, record.error_type))
            span.end(end_time=record.end_ns)
            kept[record.import_id] = set_span_in_context(span)

    # -- flushing ---------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Export what is buffered, within ``timeout_s`` for spans and metrics together."""
        deadline = time.monotonic() + timeout_s
        spans_ok = self.tracer_provider.force_flush(int(timeout_s * 1000))
        left_ms = max(0, int((deadline - time.monotonic()) * 1000))
        metrics_ok = self.meter_provider.force_flush(left_ms) if left_ms else False
        return bool(spans_ok) and bool(metrics_ok)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        if self._stream is not None:
            self._stream.close()


class _Instruments:
    """The FaaS semantic-convention metrics and the lifecycle's own."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE)
        self.invocations = meter.create_counter("faas.invocations", unit="{invocation}")
        self.coldstarts = meter.create_counter("faas.coldstarts", unit="{coldstart}")
        self.errors = meter.create_counter("faas.errors", unit="{error}")
        self.timeouts = meter.create_counter("faas.timeouts", unit="{timeout}")
        self.init_duration = meter.create_histogram(
            "faas.init_duration", unit="s", explicit_bucket_boundaries_advisory=SECONDS
        )
        self.invoke_duration = meter.create_histogram(
            "faas.invoke_duration", unit="s", explicit_bucket_boundaries_advisory=SECONDS
        )
        self.mem_usage = meter.create_histogram(
            "faas.mem_usage", unit="By", explicit_bucket_boundaries_advisory=BYTES
        )
        self.starts = meter.create_counter("lifecycle.starts", unit="{invocation}")
        self.idle_duration = meter.create_histogram(
            "lifecycle.idle_duration", unit="s", explicit_bucket_boundaries_advisory=IDLE_SECONDS
        )
        self.invocation_seq = meter.create_histogram(
            "lifecycle.invocation_seq",
            unit="{invocation}",
            explicit_bucket_boundaries_advisory=SEQUENCE,
        )
        self.stale_connections = meter.create_counter("lifecycle.connection.stale", unit="{event}")
        self.global_leaks = meter.create_counter("lifecycle.global.leaks", unit="{event}")

    def record(self, record: InvocationRecord) -> None:
        facts = record.facts
        trigger = {"faas.trigger": record.trigger}
        self.invocations.add(1, trigger)
        if facts.start in COLD_START_TYPES:
            self.coldstarts.add(1, trigger)
        if record.outcome == ERROR:
            self.errors.add(1, trigger)
        elif record.outcome == TIMEOUT:
            self.timeouts.add(1, trigger)
        if record.init is not None:
            self.init_duration.record(
                record.init.duration_s, {"lifecycle.init_type": record.init.init_type}
            )
        self.invoke_duration.record(record.duration_s, trigger)
        rss = _max_rss_bytes()
        if rss is not None:
            self.mem_usage.record(rss)
        self.starts.add(1, {"lifecycle.start": str(facts.start)})
        if facts.idle_s is not None:
            self.idle_duration.record(facts.idle_s)
        self.invocation_seq.record(facts.invocation_seq)
        for event in record.events:
            attributes = dict(event.attributes)
            if event.name == "lifecycle.connection.stale":
                self.stale_connections.add(
                    1,
                    {
                        k: attributes[k]
                        for k in ("db.system", "lifecycle.connection.outcome")
                        if k in attributes
                    },
                )
            elif event.name == "lifecycle.global.leak":
                self.global_leaks.add(1)


def invocation_attributes(record: InvocationRecord) -> dict[str, Any]:
    """The invocation span's attributes (DESIGN.md §2), from the record alone."""
    facts = record.facts
    function = record.function
    attributes: dict[str, Any] = {
        "faas.coldstart": facts.start in COLD_START_TYPES,
        "faas.trigger": record.trigger,
        "cloud.provider": "aws",
        "lifecycle.start": str(facts.start),
        "lifecycle.invocation_seq": facts.invocation_seq,
        "lifecycle.environment.id": facts.environment_id,
        "lifecycle.environment.age_s": facts.environment_age_s,
        "lifecycle.init_type": facts.init_type,
        "lifecycle.outcome": record.outcome,
    }
    optional: dict[str, Any] = {
        "faas.invocation_id": facts.request_id,
        "faas.name": function.function_name,
        "faas.version": function.function_version,
        "faas.instance": function.log_stream,
        "faas.max_memory": None if function.memory_mb is None else function.memory_mb * 1024 * 1024,
        "cloud.region": function.region,
        "cloud.resource_id": record.invoked_function_arn,
        "cloud.account.id": _account_of(record.invoked_function_arn),
        "lifecycle.idle_s": facts.idle_s,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    return attributes


def _stack_without_message(exc: BaseException) -> str:
    """The traceback's frames and the exception's type, as Python prints them, minus the
    message (which may carry payload values)."""
    import traceback

    frames = "".join(traceback.format_tb(exc.__traceback__))
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return f"Traceback (most recent call last):\n{frames}{kind}"


def _account_of(arn: str | None) -> str | None:
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    if not arn:
        return None
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 and parts[4] else None


def _parent_context(record: InvocationRecord) -> Context | None:
    """The incoming trace context: W3C headers of an HTTP event first, then X-Ray's."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    parsed = parse_traceparent(record.traceparent) or parse_xray(record.xray_trace_header)
    if parsed is None:
        return None
    trace_id, span_id, sampled = parsed
    from opentelemetry.trace import TraceState

    state = TraceState()
    if record.traceparent and record.tracestate:
        try:
            state = TraceState.from_header([record.tracestate])
        except Exception:  # a bad tracestate is dropped, the trace still continues
            state = TraceState()
    context = SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        trace_state=state,
    )
    return set_span_in_context(NonRecordingSpan(context))


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
    detected = Resource.create({})  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, SDK facts
    merged = dict(attributes)
    for key, detected_value in detected.attributes.items():
        if key == "service.name" and str(detected_value).startswith("unknown_service"):
            continue  # the function's name says more than the SDK's placeholder
        merged[key] = detected_value
    merged.setdefault("service.name", function.function_name or "unknown_service")
    return Resource(merged)


def _probe_version() -> str:
    try:
        from importlib.metadata import version

        return version("lifecycle-probe")
    except Exception:
        return "unknown"


def _preferred_temporality() -> dict[type, Any] | None:
    """Delta for counters and histograms, unless the standard variable chooses."""
    if os.environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"):
        return None
    from opentelemetry.sdk.metrics import Counter, Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    return {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}


def _meter_provider(resource: Resource, readers: Iterable[MetricReader]) -> MeterProvider:
    from opentelemetry.sdk.metrics import MeterProvider

    if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER"):
        return MeterProvider(resource=resource, metric_readers=list(readers))
    # Exemplars are off unless asked for: they would tie metric points to traces that a
    # sampled-out request never exported.
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    return MeterProvider(
        resource=resource, metric_readers=list(readers), exemplar_filter=AlwaysOffExemplarFilter()
    )


def _max_rss_bytes() -> int | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    except Exception:
        return None


class _AppendedLines:
    """The OTLP file, shared by the span and metric exporters of this process and by other
    processes (every environment of a function may write to one file): each line goes out
    in one ``write`` on an ``O_APPEND`` descriptor, so lines never interleave."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = _thread.allocate_lock()
        self.closed = False

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        return len(text)

    def flush(self) -> None:
        return None  # every write went straight to the file

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                os.close(self._fd)
