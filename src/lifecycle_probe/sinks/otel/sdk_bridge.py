"""OpenTelemetry SDK exporters handed to ``OtelSink`` (``span_exporter=``,
``metric_exporter=``): the probe's spans and points as the SDK's ``ReadableSpan`` and
``MetricsData``.

For tests and benchmarks (the SDK's ``InMemorySpanExporter``, the probe's
``memory.InMemoryMetricExporter``) and for users who bring an exporter of their own. Only
this module of the export path imports the SDK, and only when such an exporter is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from lifecycle_probe.sinks.otel.exporters import Exporter
from lifecycle_probe.sinks.otel.failures import ExportError, error_kind
from lifecycle_probe.sinks.otel.metrics import CUMULATIVE
from lifecycle_probe.sinks.otel.spans import KIND_SERVER, STATUS_ERROR

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter

    from lifecycle_probe.sinks.otel.metrics import MetricData, Point
    from lifecycle_probe.sinks.otel.spans import Span

__all__ = ["SdkExporter"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


class SdkExporter(Exporter):
    """SDK span and/or metric exporters as one destination."""

    def __init__(
        self,
        span_exporter: SpanExporter | None,
        metric_exporter: MetricExporter | None,
        resource: Mapping[str, Any],
        scope: tuple[str, str],
    ) -> None:
        self.span_exporter = span_exporter
        self.metric_exporter = metric_exporter
        self.takes_spans = span_exporter is not None
        self.takes_metrics = metric_exporter is not None
        self._resource = Resource(dict(resource))
        self._scope = InstrumentationScope(scope[0], scope[1])
        self.destinations = {
            "spans": type(span_exporter).__name__,
            "metrics": type(metric_exporter).__name__,
        }

    def export_spans(self, spans: Sequence[Span], timeout_s: float) -> None:
        if self.span_exporter is None:
            return
        try:
            result = self.span_exporter.export([self.readable(span) for span in spans])
        except Exception as exc:
            raise ExportError(error_kind(exc)) from None
        if result is not SpanExportResult.SUCCESS:
            raise ExportError("refused")

    def export_metrics(self, metrics: Sequence[MetricData], timeout_s: float) -> None:
        if self.metric_exporter is None:
            return
        try:
            result = self.metric_exporter.export(
                self.metrics_data(metrics), timeout_millis=timeout_s * 1000
            )
        except Exception as exc:
            raise ExportError(error_kind(exc)) from None
        if result is not MetricExportResult.SUCCESS:
            raise ExportError("refused")

    def shutdown(self) -> None:
        for exporter in (self.span_exporter, self.metric_exporter):
            if exporter is not None:
                exporter.shutdown()

    def abandon(self) -> None:
        return None  # the parent's exporters are the parent's

    def readable(self, span: Span) -> ReadableSpan:
        state = TraceState.from_header([span.trace_state]) if span.trace_state else TraceState()
        context = SpanContext(span.trace_id, span.span_id, False, _SAMPLED, state)
        parent = None
        if span.parent_id is not None:
            parent = SpanContext(span.trace_id, span.parent_id, span.parent_remote, _SAMPLED, state)
        status = _UNSET
        if span.status_code == STATUS_ERROR:
            status = Status(StatusCode.ERROR, span.status_message)
        return ReadableSpan(
            span.name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=span.attributes,
            events=[Event(name, values, time_ns) for name, time_ns, values in span.events],
            kind=SpanKind.SERVER if span.kind == KIND_SERVER else SpanKind.INTERNAL,
            status=status,
            start_time=span.start_ns,
            end_time=span.end_ns,
            instrumentation_scope=self._scope,
        )

    def metrics_data(self, metrics: Sequence[MetricData]) -> MetricsData:
        converted = []
        for metric in metrics:
            temporality = (
                AggregationTemporality.CUMULATIVE
                if metric.temporality == CUMULATIVE
                else AggregationTemporality.DELTA
            )
            start, end = metric.start_ns, metric.time_ns
            data: Sum | Histogram
            if metric.bounds is None:
                numbers = [
                    NumberDataPoint(p.attributes, start, end, p.total, _exemplars(p))
                    for p in metric.points
                ]
                data = Sum(numbers, temporality, True)
            else:
                histograms = [
                    HistogramDataPoint(
                        p.attributes,
                        start,
                        end,
                        p.count,
                        p.total,
                        list(p.buckets or ()),
                        metric.bounds,
                        p.min,
                        p.max,
                        _exemplars(p),
                    )
                    for p in metric.points
                ]
                data = Histogram(histograms, temporality)
            converted.append(Metric(metric.name, "", metric.unit, data))
        scope_metrics = ScopeMetrics(self._scope, converted, "")
        return MetricsData([ResourceMetrics(self._resource, [scope_metrics], "")])


def _exemplars(point: Point) -> Sequence[Any]:
    if not point.exemplars:
        return ()
    from opentelemetry.sdk.metrics import Exemplar as SdkExemplar

    return [
        SdkExemplar({}, e.value, e.time_ns, e.span_id, e.trace_id) for e in point.exemplars.values()
    ]
