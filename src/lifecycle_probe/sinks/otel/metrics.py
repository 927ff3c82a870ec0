"""The FaaS and lifecycle metrics (DESIGN.md §2), aggregated here and handed to OTel exporters.

Why not the SDK's MeterProvider: every sync flush would run its collection machinery
(views, reservoirs, attribute hashing, one reader pass per instrument), which cost more
than the rest of the export put together. The probe's instruments are fixed (counters and
explicit-bucket histograms with a handful of attribute sets), so it keeps the sums and
bucket counts itself and builds the SDK's ``MetricsData`` only at export time, for the
OTLP exporters to encode.

Temporality is delta unless ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` says
``cumulative``. Delta points cover the time since the last *successful* export: a failed
export (collector down, or cut off by a freeze) is not lost, its counts go out with the
next one. Exemplars are off unless ``OTEL_METRICS_EXEMPLAR_FILTER`` is ``always_on`` or
``trace_based``; then each point carries the span of the last invocation that fed it.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics import Exemplar as _Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)

from lifecycle_probe._safe import warn_once
from lifecycle_probe.records import COLD_START_TYPES, ERROR, TIMEOUT

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from lifecycle_probe.records import InitFailureRecord, InvocationRecord

Attributes = tuple[tuple[str, Any], ...]

# Histogram buckets in each instrument's own unit (the SDK's defaults are for milliseconds).
# Durations: 1 ms to 15 min, Lambda's longest timeout.
SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# Idle (frozen) time: a tenth of a second to the hours an environment can be kept.
IDLE_SECONDS = (0.1, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# Memory: 16 MiB to 10 GiB, Lambda's range.
BYTES = tuple(
    float(mib * 1024 * 1024) for mib in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10240)
)
# /tmp: from 1 MiB to 10 GiB, Lambda's largest ephemeral storage.
TMP_BYTES = tuple(
    float(mib * 1024 * 1024) for mib in (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 10240)
)
# Reuse: how many invocations an environment has served.
SEQUENCE = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 10000)

# (name, unit, bucket bounds or None for a monotonic counter), in export order.
INSTRUMENTS: tuple[tuple[str, str, tuple[float, ...] | None], ...] = (
    ("faas.invocations", "{invocation}", None),
    ("faas.coldstarts", "{coldstart}", None),
    ("faas.errors", "{error}", None),
    ("faas.timeouts", "{timeout}", None),
    ("faas.init_duration", "s", SECONDS),
    ("faas.invoke_duration", "s", SECONDS),
    ("faas.mem_usage", "By", BYTES),
    ("lifecycle.starts", "{invocation}", None),
    ("lifecycle.idle_duration", "s", IDLE_SECONDS),
    ("lifecycle.invocation_seq", "{invocation}", SEQUENCE),
    ("lifecycle.connection.stale", "{event}", None),
    ("lifecycle.global.leaks", "{event}", None),
    # Not in the FaaS semantic conventions, which count invocation errors only: named and
    # measured as their faas.errors ({error}), with the standard error.type attribute.
    ("faas.init_errors", "{error}", None),
    # Invocations whose spans (signal=spans) or metric points (signal=metrics) the probe
    # gave up on, by reason (queue_full, export_failed, timeout, build_failed): exported
    # with the next export that goes through, so that nothing is lost unaccounted.
    ("lifecycle.telemetry.dropped", "{invocation}", None),
    # /tmp and memory at each invocation's end, and their warnings (once per environment).
    ("lifecycle.tmp.used", "By", TMP_BYTES),
    ("lifecycle.memory.rss", "By", BYTES),
    ("lifecycle.tmp.warnings", "{warning}", None),
    ("lifecycle.memory.growth_warnings", "{warning}", None),
    # SnapStart hazards, by lifecycle.snapstart.hazard.kind, once per restore.
    ("lifecycle.snapstart.hazards", "{event}", None),
)

_STALE_KEYS = ("db.system", "lifecycle.connection.outcome")
_INF = float("inf")
_NONE: tuple[Any, ...] = ()


def preferred_temporality(environ: dict[str, str] | None = None) -> AggregationTemporality:
    """Delta (the default, and for ``delta``/``lowmemory``) or cumulative, per the standard
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``."""
    value = (environ if environ is not None else os.environ).get(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", ""
    )
    choice = value.strip().lower()
    if choice == "cumulative":
        return AggregationTemporality.CUMULATIVE
    if choice not in ("", "delta", "lowmemory"):
        warn_once(
            "otel:temporality",
            "lifecycle_probe: OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=%r is not "
            "cumulative, delta or lowmemory; using delta",
            value,
        )
    # Only counters and histograms here: lowmemory means delta for both.
    return AggregationTemporality.DELTA


def exemplar_filter(environ: dict[str, str] | None = None) -> str:
    """``always_off`` (the default), ``always_on`` or ``trace_based``, per the standard
    ``OTEL_METRICS_EXEMPLAR_FILTER``."""
    value = (environ if environ is not None else os.environ).get("OTEL_METRICS_EXEMPLAR_FILTER", "")
    choice = value.strip().lower() or "always_off"
    if choice not in ("always_off", "always_on", "trace_based"):
        warn_once(
            "otel:exemplars",
            "lifecycle_probe: OTEL_METRICS_EXEMPLAR_FILTER=%r is not always_off, always_on or "
            "trace_based; exemplars stay off",
            value,
        )
        return "always_off"
    return choice


class _Point:
    """One attribute set of one instrument: a sum, or a histogram's count, sum and buckets.

    A point outlives its delta interval and is reset in place (a delta export sends only
    the points with a measurement since): the attribute dict is built once.
    """

    __slots__ = ("attributes", "bounds", "buckets", "count", "exemplars", "max", "min", "total")

    def __init__(self, attributes: Attributes, bounds: tuple[float, ...] | None) -> None:
        self.attributes = dict(attributes)
        self.bounds = bounds
        self.reset()

    def reset(self) -> None:
        self.total: int | float = 0
        self.count = 0
        self.min = _INF
        self.max = -_INF
        # A new list, not zeroed in place: the last export's data point still holds the old.
        self.buckets = None if self.bounds is None else [0] * (len(self.bounds) + 1)
        # bucket index (0 for a counter) -> the last exemplar that landed there; made at
        # the first exemplar (they are off by default)
        self.exemplars: dict[int, _Exemplar] | None = None


class _Span:
    """What an exemplar says about the measurement's invocation span."""

    __slots__ = ("sampled", "span_id", "time_ns", "trace_id")

    def __init__(self, trace_id: int, span_id: int, sampled: bool, time_ns: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.time_ns = time_ns


class Metrics:
    """The probe's instruments and their points since the last successful export."""

    def __init__(
        self,
        resource: Resource,
        scope: InstrumentationScope,
        start_ns: int,
        temporality: AggregationTemporality | None = None,
        exemplars: str | None = None,
    ) -> None:
        self._resource = resource
        self._scope = scope
        self.temporality = temporality if temporality is not None else preferred_temporality()
        self._exemplars = exemplars if exemplars is not None else exemplar_filter()
        self._instruments = {name: (unit, bounds) for name, unit, bounds in INSTRUMENTS}
        self._points: dict[tuple[str, Attributes], _Point] = {}
        # Points with a measurement to export, per instrument, in the order first measured.
        self._measured: dict[str, list[_Point]] = {}
        # Start of the current delta interval, or of the whole cumulative series.
        self._start_ns = start_ns
        self._span: _Span | None = None
        # Invocations (and failed INITs) measured in the current interval: what a metric
        # export of it, if dropped, takes with it.
        self.recorded = 0

    # -- recording ----------------------------------------------------------------------------

    def record(
        self,
        record: InvocationRecord,
        span: tuple[int, int, bool] | None = None,
        rss_bytes: int | None = None,
    ) -> None:
        """The measurements of one finished invocation. ``span`` is (trace id, span id,
        sampled) of its invocation span, for exemplars."""
        self._span = None
        self.recorded += 1
        if span is not None and self._exemplars != "always_off":
            self._span = _Span(span[0], span[1], span[2], record.end_ns)
        facts = record.facts
        trigger = (("faas.trigger", record.trigger),)
        add = self._add
        add("faas.invocations", trigger, 1)
        if facts.start in COLD_START_TYPES:
            add("faas.coldstarts", trigger, 1)
        if record.outcome == ERROR:
            add("faas.errors", trigger, 1)
        elif record.outcome == TIMEOUT:
            add("faas.timeouts", trigger, 1)
        if record.init is not None:
            init_type = (("lifecycle.init_type", record.init.init_type),)
            add("faas.init_duration", init_type, record.init.duration_s)
        add("faas.invoke_duration", trigger, record.duration_s)
        if rss_bytes is not None:
            add("faas.mem_usage", (), rss_bytes)
        add("lifecycle.starts", (("lifecycle.start", str(facts.start)),), 1)
        if facts.idle_s is not None:
            add("lifecycle.idle_duration", (), facts.idle_s)
        add("lifecycle.invocation_seq", (), facts.invocation_seq)
        for event in record.events:
            if event.name == "lifecycle.connection.stale":
                kept = tuple((k, v) for k, v in event.attributes if k in _STALE_KEYS)
                add("lifecycle.connection.stale", tuple(sorted(kept)), 1)
            elif event.name == "lifecycle.global.leak":
                add("lifecycle.global.leaks", (), 1)
            elif event.name == "lifecycle.snapstart.hazard":
                kind = dict(event.attributes).get("lifecycle.snapstart.hazard.kind")
                add("lifecycle.snapstart.hazards", (("lifecycle.snapstart.hazard.kind", kind),), 1)
            elif event.name == "lifecycle.tmp.threshold":
                add("lifecycle.tmp.warnings", (), 1)
            elif event.name == "lifecycle.memory.growth":
                add("lifecycle.memory.growth_warnings", (), 1)
        if record.tmp_used_bytes is not None:
            add("lifecycle.tmp.used", (), record.tmp_used_bytes)
        if record.rss_bytes is not None:
            add("lifecycle.memory.rss", (), record.rss_bytes)

    def record_init_failure(self, failure: InitFailureRecord) -> None:
        """A failed INIT: one ``faas.init_errors`` by error type and init type."""
        self._span = None  # no invocation span to point an exemplar at
        self.recorded += 1
        attributes = (
            ("error.type", failure.error_type),
            ("lifecycle.init_type", failure.init_type),
        )
        self._add("faas.init_errors", attributes, 1)

    def record_dropped(self, reason: str, signal: str, count: int) -> None:
        """``count`` invocations whose ``signal`` (``spans`` or ``metrics``) was given up."""
        if count <= 0:
            return
        self._span = None
        self._add("lifecycle.telemetry.dropped", (("reason", reason), ("signal", signal)), count)

    def _add(self, name: str, attributes: Attributes, value: float) -> None:
        if value < 0:
            # A wall clock stepped back mid-invocation: a histogram takes no negative values
            # (the SDK drops them too), and a zero would be a made-up figure.
            warn_once(
                "otel:negative",
                "lifecycle_probe: dropped a negative %s measurement (the clock moved back?)",
                name,
            )
            return
        key = (name, attributes)
        point = self._points.get(key)
        if point is None:
            point = self._points[key] = _Point(attributes, self._instruments[name][1])
        if not point.count:
            self._measured.setdefault(name, []).append(point)
        point.total += value
        point.count += 1
        index = 0
        buckets = point.buckets
        if buckets is not None:
            # OTel's explicit buckets include their upper bound: (b[i-1], b[i]].
            index = bisect_left(point.bounds or (), value)
            buckets[index] += 1
            if value < point.min:
                point.min = value
            if value > point.max:
                point.max = value
        span = self._span
        if span is not None and (span.sampled or self._exemplars == "always_on"):
            if point.exemplars is None:
                point.exemplars = {}
            point.exemplars[index] = _Exemplar({}, value, span.time_ns, span.span_id, span.trace_id)

    # -- exporting ------------------------------------------------------------------------------

    def collect(self, now_ns: int) -> MetricsData | None:
        """The points measured in the interval (delta) or ever (cumulative) as the SDK's
        MetricsData, or None when there are none. Nothing is reset here: call
        :meth:`exported` once the exporter took it."""
        if not self._measured:
            return None
        metrics = []
        temporality = self.temporality
        start_ns = self._start_ns
        for name, measured in self._measured.items():
            unit, bounds = self._instruments[name]
            data: Sum | Histogram
            if bounds is None:
                numbers = [
                    NumberDataPoint(
                        point.attributes,
                        start_ns,
                        now_ns,
                        point.total,
                        list(point.exemplars.values()) if point.exemplars else _NONE,
                    )
                    for point in measured
                ]
                data = Sum(numbers, temporality, True)
            else:
                histograms = [
                    HistogramDataPoint(
                        point.attributes,
                        start_ns,
                        now_ns,
                        point.count,
                        point.total,
                        # A copy: a cumulative point keeps counting into its own list.
                        list(point.buckets or _NONE),
                        bounds,
                        point.min,
                        point.max,
                        list(point.exemplars.values()) if point.exemplars else _NONE,
                    )
                    for point in measured
                ]
                data = Histogram(histograms, temporality)
            metrics.append(Metric(name, "", unit, data))
        scope_metrics = ScopeMetrics(self._scope, metrics, "")
        return MetricsData([ResourceMetrics(self._resource, [scope_metrics], "")])

    def exported(self, now_ns: int) -> None:
        """The data of :meth:`collect` is on its way: a delta interval starts anew, and a
        cumulative point's exemplars, like the SDK's reservoirs, start over."""
        if self.temporality is AggregationTemporality.DELTA:
            for measured in self._measured.values():
                for point in measured:
                    point.reset()
            self._measured = {}
            self._start_ns = now_ns
            self.recorded = 0
        else:
            for measured in self._measured.values():
                for point in measured:
                    point.exemplars = None
