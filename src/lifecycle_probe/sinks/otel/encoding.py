"""Spans and metric points as OTLP JSON export requests (the OTLP/HTTP JSON body, and one
line of the ``otlp-file`` format, DESIGN.md §2 "File format").

The protobuf JSON mapping of OTLP: trace and span ids in lower-case hex, 64-bit integers
(timestamps, counts, ``intValue``) as decimal strings, enumerations as numbers, attributes
as ``{"key", "value": AnyValue}`` with the value typed (``stringValue``, ``boolValue``,
``intValue``, ``doubleValue``, ``arrayValue``, ``bytesValue``). The probe encodes this
itself, with the standard library: the OpenTelemetry exporters that do it pin one SDK
version, which a function bundling another cannot live with (issue 12).

The text is written directly rather than built as dicts for ``json.dumps``: that took
several times longer than building the telemetry, on the caller's path in ``sync`` mode.
Every string goes through ``json``'s own C string encoder; what never changes (the
resource, the scope, attribute keys, bucket bounds, a metric point's attribute set) is
encoded once.
"""

from __future__ import annotations

from base64 import b64encode
from json.encoder import encode_basestring as _quote  # the C encoder, when there is one
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from lifecycle_probe.sinks.otel.metrics import Exemplar, MetricData, Point
    from lifecycle_probe.sinks.otel.spans import Span

__all__ = ["Encoder"]

# Span flags: the parent's remoteness is known (bit 8), and it is remote (bit 9).
_LOCAL_PARENT = 0x100
_REMOTE_PARENT = 0x100 | 0x200
_NON_FINITE = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}
# Encoded keys and attribute sets; bounded, for a function that makes up keys.
_CACHE_LIMIT = 512
_keys: dict[str, str] = {}
_attribute_sets: dict[Any, str] = {}


def _double(value: float) -> str:
    text = repr(float(value))
    # JSON has no NaN or infinities: protobuf's JSON mapping spells them as strings.
    return _NON_FINITE.get(text, text)


def any_value(value: Any) -> str:
    """An attribute value as OTLP's typed AnyValue."""
    # bool before int: True is an int to Python, a boolValue to OTLP.
    kind = type(value)
    if kind is str:
        return '{"stringValue":' + _quote(value) + "}"
    if kind is bool:
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if kind is int:
        return '{"intValue":"' + str(value) + '"}'
    if kind is float:
        return '{"doubleValue":' + _double(value) + "}"
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, int):
        return '{"intValue":"' + str(int(value)) + '"}'
    if isinstance(value, float):
        return '{"doubleValue":' + _double(value) + "}"
    if isinstance(value, str):
        return '{"stringValue":' + _quote(str(value)) + "}"
    if isinstance(value, (bytes, bytearray)):
        return '{"bytesValue":"' + b64encode(value).decode("ascii") + '"}'
    if isinstance(value, (list, tuple)):
        return '{"arrayValue":{"values":[' + ",".join(any_value(v) for v in value) + "]}}"
    return '{"stringValue":' + _quote(str(value)) + "}"


def _key(key: str) -> str:
    encoded = _keys.get(key)
    if encoded is None:
        if len(_keys) >= _CACHE_LIMIT:
            _keys.clear()
        encoded = _keys[key] = '{"key":' + _quote(key) + ',"value":'
    return encoded


def attributes(values: Mapping[str, Any]) -> str:
    """A JSON array of OTLP KeyValues."""
    return "[" + ",".join(_key(k) + any_value(v) + "}" for k, v in values.items()) + "]"


def _attribute_set(point: Point) -> str:
    # A metric point's attributes are the same interval after interval: encoded once.
    encoded = _attribute_sets.get(point.key)
    if encoded is None:
        if len(_attribute_sets) >= _CACHE_LIMIT:
            _attribute_sets.clear()
        encoded = _attribute_sets[point.key] = attributes(point.attributes)
    return encoded


class Encoder:
    """Export requests of one resource and one instrumentation scope."""

    def __init__(self, resource: Mapping[str, Any], scope: tuple[str, str]) -> None:
        head = (
            '{"resource":{"attributes":' + attributes(resource) + "},"
            '"scope%s":[{"scope":{"name":'
            + _quote(scope[0])
            + ',"version":'
            + _quote(scope[1])
            + "},"
        )
        self._spans_head = '{"resourceSpans":[' + head % "Spans" + '"spans":['
        self._metrics_head = '{"resourceMetrics":[' + head % "Metrics" + '"metrics":['
        self._bounds: dict[tuple[float, ...], str] = {}

    def spans(self, spans: Iterable[Span]) -> bytes:
        """An ExportTraceServiceRequest, as one line of JSON (no newline)."""
        body = ",".join(_span(span) for span in spans)
        return (self._spans_head + body + "]}]}]}").encode("utf-8")

    def metrics(self, metrics: Iterable[MetricData]) -> bytes:
        """An ExportMetricsServiceRequest, as one line of JSON (no newline)."""
        body = ",".join(self._metric(metric) for metric in metrics)
        return (self._metrics_head + body + "]}]}]}").encode("utf-8")

    def _metric(self, metric: MetricData) -> str:
        times = f',"startTimeUnixNano":"{metric.start_ns}","timeUnixNano":"{metric.time_ns}"'
        head = '{"name":' + _quote(metric.name) + ',"unit":' + _quote(metric.unit) + ","
        temporality = f'"aggregationTemporality":{metric.temporality}'
        if metric.bounds is None:
            points = ",".join(_sum_point(point, times) for point in metric.points)
            body = '"sum":{"dataPoints":[' + points + "]," + temporality
            return head + body + ',"isMonotonic":true}}'
        bounds = self._bounds.get(metric.bounds)
        if bounds is None:
            bounds = self._bounds[metric.bounds] = (
                ',"explicitBounds":[' + ",".join(_double(b) for b in metric.bounds) + "]"
            )
        points = ",".join(_histogram_point(point, times, bounds) for point in metric.points)
        return head + '"histogram":{"dataPoints":[' + points + "]," + temporality + "}}"


def _span(span: Span) -> str:
    parts = [
        f'{{"traceId":"{span.trace_id:032x}","spanId":"{span.span_id:016x}"',
    ]
    if span.trace_state:
        parts.append(',"traceState":' + _quote(span.trace_state))
    if span.parent_id is not None:
        parts.append(f',"parentSpanId":"{span.parent_id:016x}"')
    parts.append(
        f',"flags":{_REMOTE_PARENT if span.parent_remote else _LOCAL_PARENT},"name":'
        + _quote(span.name)
        + f',"kind":{span.kind},"startTimeUnixNano":"{span.start_ns}"'
        f',"endTimeUnixNano":"{span.end_ns}","attributes":' + attributes(span.attributes)
    )
    if span.events:
        parts.append(
            ',"events":['
            + ",".join(
                f'{{"timeUnixNano":"{time_ns}","name":'
                + _quote(name)
                + ',"attributes":'
                + attributes(values)
                + "}"
                for name, time_ns, values in span.events
            )
            + "]"
        )
    status = []
    if span.status_message:
        status.append('"message":' + _quote(span.status_message))
    if span.status_code:
        status.append(f'"code":{span.status_code}')
    parts.append(',"status":{' + ",".join(status) + "}}")
    return "".join(parts)


def _number(value: float, integer: bool) -> str:
    if integer:
        return f'"asInt":"{int(value)}"'
    return '"asDouble":' + _double(value)


def _exemplars(exemplars: Iterable[Exemplar], integer: bool) -> str:
    return (
        ',"exemplars":['
        + ",".join(
            f'{{"timeUnixNano":"{e.time_ns}","spanId":"{e.span_id:016x}",'
            f'"traceId":"{e.trace_id:032x}",' + _number(e.value, integer) + "}"
            for e in exemplars
        )
        + "]"
    )


def _sum_point(point: Point, times: str) -> str:
    # Counters count whole things: an integer total goes as asInt.
    integer = type(point.total) is int
    exemplars = _exemplars(point.exemplars.values(), integer) if point.exemplars else ""
    return (
        '{"attributes":'
        + _attribute_set(point)
        + times
        + exemplars
        + ","
        + _number(point.total, integer)
        + "}"
    )


def _histogram_point(point: Point, times: str, bounds: str) -> str:
    exemplars = _exemplars(point.exemplars.values(), False) if point.exemplars else ""
    buckets = '","'.join(map(str, point.buckets or ()))
    return (
        '{"attributes":'
        + _attribute_set(point)
        + times
        + f',"count":"{point.count}","sum":'
        + _double(point.total)
        + ',"bucketCounts":["'
        + buckets
        + '"]'
        + bounds
        + exemplars
        + ',"min":'
        + _double(point.min)
        + ',"max":'
        + _double(point.max)
        + "}"
    )
