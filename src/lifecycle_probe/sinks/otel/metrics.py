"""The FaaS and lifecycle metrics (DESIGN.md §2), aggregated here, exported as OTLP points.

Why not the SDK's MeterProvider: every sync flush would run its collection machinery
(views, reservoirs, attribute hashing, one reader pass per instrument), which cost more
than the rest of the export put together, and its import alone weighs megabytes. The
probe's instruments are fixed (counters and explicit-bucket histograms with a handful of
attribute sets), so it keeps the sums and bucket counts itself, pre-aggregated as each
invocation is recorded, and a collection only snapshots the points measured since the
last export (:class:`MetricData`, what OTLP carries of a metric).

Temporality is delta unless ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` says
``cumulative``. Delta points cover the time since the last *successful* export: a failed
export (collector down, or cut off by a freeze) is not lost, its counts go out with the
next one. Exemplars are off unless ``OTEL_METRICS_EXEMPLAR_FILTER`` is ``always_on`` or
``trace_based``; then each point carries the span of the last invocation that fed it.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, NamedTuple

from lifecycle_probe._safe import warn_once
from lifecycle_probe.records import (
    COLD_START_TYPES,
    CONNECTION_OUTCOME,
    ERROR,
    HAZARD_EVENT,
    HAZARD_KIND,
    LEAK_EVENT,
    MEMORY_EVENT,
    STALE_EVENT,
    TIMEOUT,
    TMP_EVENT,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lifecycle_probe.rare_records import InitFailureRecord
    from lifecycle_probe.records import InvocationRecord

__all__ = [
    "CUMULATIVE",
    "DELTA",
    "INSTRUMENTS",
    "SECONDS",
    "Exemplar",
    "MetricData",
    "Metrics",
    "Point",
    "exemplar_filter",
    "preferred_temporality",
]

Attributes = tuple[tuple[str, Any], ...]

# OTLP's AggregationTemporality, as the wire carries it.
DELTA = 1
CUMULATIVE = 2


class Exemplar(NamedTuple):
    """The measurement of one invocation, pointing at its span."""

    value: float
    time_ns: int
    span_id: int
    trace_id: int


class Point:
    """One attribute set of one instrument in one interval: a sum (``total``), or a
    histogram's count, sum, min, max and bucket counts.

    A delta point is done with at the end of its interval (the next measurement starts a
    new one), so a collection hands out the points themselves, not copies.
    """

    __slots__ = ("bounds", "buckets", "count", "exemplars", "key", "max", "min", "total")

    def __init__(self, key: Attributes, bounds: tuple[float, ...] | None) -> None:
        # (Metrics._add_all makes a point with its first measurement in place, setting
        # these same slots: a slot added here must be set there too.)
        # The attributes as measured: a hashable tuple, which the encoder's cache keys on.
        self.key = key
        # The instrument's bucket bounds (None for a counter): what a measurement is sorted
        # by, at hand without looking the instrument up again.
        self.bounds = bounds
        self.total: int | float = 0
        self.count = 0
        self.min = _INF
        self.max = -_INF
        self.buckets = None if bounds is None else [0] * (len(bounds) + 1)
        # bucket index (0 for a counter) -> the last exemplar that landed there; made at
        # the first exemplar (they are off by default)
        self.exemplars: dict[int, Exemplar] | None = None

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.key)

    def copy(self) -> Point:
        twin = Point.__new__(Point)
        twin.key = self.key
        twin.bounds = self.bounds
        twin.total = self.total
        twin.count = self.count
        twin.min = self.min
        twin.max = self.max
        twin.buckets = None if self.buckets is None else list(self.buckets)
        twin.exemplars = None if self.exemplars is None else dict(self.exemplars)
        return twin


class MetricData(NamedTuple):
    """One instrument's points of one collection, over ``start_ns`` to ``time_ns``: a
    monotonic sum (``bounds`` None) or an explicit-bucket histogram."""

    name: str
    unit: str
    temporality: int
    start_ns: int
    time_ns: int
    points: tuple[Point, ...]
    bounds: tuple[float, ...] | None


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
# Lambda's billed duration, in its own unit (whole milliseconds): the durations' buckets.
BILLED_MILLISECONDS = tuple(round(bound * 1000, 3) for bound in SECONDS)
# Lambda's peak memory, in its own unit (MB, which are MiB): 16 MB to 10 GB, its range.
MEGABYTES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10240)

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
    # gave up on, by reason (queue_full, export_failed, timeout, build_failed; and
    # platform_figures_evicted: Lambda's reports of requests, given up before an export):
    # exported with the next export that goes through, so nothing is lost unaccounted.
    ("lifecycle.telemetry.dropped", "{invocation}", None),
    # /tmp and memory at each invocation's end, and their warnings (once per environment).
    ("lifecycle.tmp.used", "By", TMP_BYTES),
    ("lifecycle.memory.rss", "By", BYTES),
    ("lifecycle.tmp.warnings", "{warning}", None),
    ("lifecycle.memory.growth_warnings", "{warning}", None),
    # SnapStart hazards, by lifecycle.snapstart.hazard.kind, once per restore.
    ("lifecycle.snapstart.hazards", "{event}", None),
    # The SnapStart restore as the probe measured it (lambda.restore).
    ("lifecycle.restore_duration", "s", SECONDS),
    # Lambda's own figures (Telemetry API), in Lambda's units where they are its own.
    ("lifecycle.platform.billed_duration", "ms", BILLED_MILLISECONDS),
    ("lifecycle.platform.max_memory_used", "MiBy", MEGABYTES),
    ("lifecycle.platform.init_duration", "s", SECONDS),
    ("lifecycle.platform.restore_duration", "s", SECONDS),
    # Lambda's INIT figure and the probe's apart by more than the agreement tolerance.
    ("lifecycle.init.disagreements", "{disagreement}", None),
)

_STALE_KEYS = ("db.system", CONNECTION_OUTCOME)
_INF = float("inf")
# The few attribute sets measured on every invocation, made once per value (a handful of
# triggers, start and init types) rather than per measurement: equal tuples, the same
# points and the same export.
_TRIGGER_SETS: dict[str, Attributes] = {}
_START_SETS: dict[str, Attributes] = {}
_INIT_TYPE_SETS: dict[str, Attributes] = {}
_MAX_CACHED_SETS = 64  # (a value nobody expected, by the thousand, makes no cache grow)


def _attribute_set(cache: dict[str, Attributes], name: str, value: Any) -> Attributes:
    if type(value) is not str:
        return ((name, value),)  # (never expected: made each time, as before)
    attributes = cache.get(value)
    if attributes is None:
        attributes = ((name, value),)
        if len(cache) < _MAX_CACHED_SETS:
            cache[value] = attributes
    return attributes


def preferred_temporality(environ: dict[str, str] | None = None) -> int:
    """Delta (the default, and for ``delta``/``lowmemory``) or cumulative, per the standard
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``."""
    value = (environ if environ is not None else os.environ).get(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", ""
    )
    choice = value.strip().lower()
    if choice == "cumulative":
        return CUMULATIVE
    if choice not in ("", "delta", "lowmemory"):
        warn_once(
            "otel:temporality",
            "lifecycle_probe: OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=%r is not "
            "cumulative, delta or lowmemory; using delta",
            value,
        )
    # Only counters and histograms here: lowmemory means delta for both.
    return DELTA


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
        start_ns: int,
        temporality: int | None = None,
        exemplars: str | None = None,
    ) -> None:
        self.temporality = temporality if temporality is not None else preferred_temporality()
        self._exemplars = exemplars if exemplars is not None else exemplar_filter()
        self._instruments = {name: (unit, bounds) for name, unit, bounds in INSTRUMENTS}
        # name -> (bounds, empty bucket counts to copy): a point's first measurement takes
        # both from one lookup, and copying a list is cheaper than building one.
        self._first = {
            name: (bounds, None if bounds is None else [0] * (len(bounds) + 1))
            for name, _, bounds in INSTRUMENTS
        }
        # Points with a measurement to export, per instrument and attribute set, both in the
        # order first measured (one lookup by attributes, not by instrument and attributes).
        self._measured: dict[str, dict[Attributes, Point]] = {}
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
        start = facts.start
        # (the cached sets looked up here, _attribute_set only for one not made yet: two
        # Python calls less per invocation)
        trigger = _TRIGGER_SETS.get(record.trigger) if type(record.trigger) is str else None
        if trigger is None:
            trigger = _attribute_set(_TRIGGER_SETS, "faas.trigger", record.trigger)
        starts = _START_SETS.get(start) if type(start) is str else None
        if starts is None:
            starts = _attribute_set(_START_SETS, "lifecycle.start", str(start))
        # The measurements in order (the order points are first measured is the export's),
        # then aggregated in one pass: one call, not one per measurement.
        measurements: list[tuple[str, Attributes, float]] = []
        add = measurements.append
        add(("faas.invocations", trigger, 1))
        if start in COLD_START_TYPES:
            add(("faas.coldstarts", trigger, 1))
        if record.outcome == ERROR:
            add(("faas.errors", trigger, 1))
        elif record.outcome == TIMEOUT:
            add(("faas.timeouts", trigger, 1))
        if record.init is not None:
            init_type = _attribute_set(
                _INIT_TYPE_SETS, "lifecycle.init_type", record.init.init_type
            )
            add(("faas.init_duration", init_type, record.init.duration_s))
        # (record.duration_s, without the property's call)
        invoke_start_ns = facts.invoke_start_ns
        duration_s = 0.0 if invoke_start_ns is None else (record.end_ns - invoke_start_ns) / 1e9
        add(("faas.invoke_duration", trigger, duration_s))
        if rss_bytes is not None:
            add(("faas.mem_usage", (), rss_bytes))
        add(("lifecycle.starts", starts, 1))
        if facts.idle_s is not None:
            add(("lifecycle.idle_duration", (), facts.idle_s))
        add(("lifecycle.invocation_seq", (), facts.invocation_seq))
        for event in record.events:
            if event.name == STALE_EVENT:
                kept = tuple((k, v) for k, v in event.attributes if k in _STALE_KEYS)
                add(("lifecycle.connection.stale", tuple(sorted(kept)), 1))
            elif event.name == LEAK_EVENT:
                add(("lifecycle.global.leaks", (), 1))
            elif event.name == HAZARD_EVENT:
                kind = dict(event.attributes).get(HAZARD_KIND)
                add(("lifecycle.snapstart.hazards", ((HAZARD_KIND, kind),), 1))
            elif event.name == TMP_EVENT:
                add(("lifecycle.tmp.warnings", (), 1))
            elif event.name == MEMORY_EVENT:
                add(("lifecycle.memory.growth_warnings", (), 1))
        if record.tmp_used_bytes is not None:
            add(("lifecycle.tmp.used", (), record.tmp_used_bytes))
        if record.rss_bytes is not None:
            add(("lifecycle.memory.rss", (), record.rss_bytes))
        if record.restore is not None:
            add(("lifecycle.restore_duration", (), record.restore.duration_s))
        for figures in record.platform:
            if figures.billed_duration_ms is not None:
                add(("lifecycle.platform.billed_duration", (), figures.billed_duration_ms))
            if figures.max_memory_used_mb is not None:
                add(("lifecycle.platform.max_memory_used", (), figures.max_memory_used_mb))
            if figures.init_duration_ms is not None:
                add(("lifecycle.platform.init_duration", (), figures.init_duration_ms / 1000))
            if figures.restore_duration_ms is not None:
                add(("lifecycle.platform.restore_duration", (), figures.restore_duration_ms / 1000))
        if record.init_disagreements:
            add(("lifecycle.init.disagreements", (), len(record.init_disagreements)))
        self._add_all(measurements)

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
        self._add_all(((name, attributes, value),))

    def _add_all(self, measurements: Sequence[tuple[str, Attributes, float]]) -> None:
        """Aggregate (instrument name, attributes, value) measurements into their points."""
        measured_points = self._measured
        first_of = self._first
        new_point = Point.__new__
        span = self._span
        if span is not None and not (span.sampled or self._exemplars == "always_on"):
            span = None  # (trace_based, and the span was not sampled: no exemplar)
        for name, attributes, value in measurements:
            if value < 0:
                # A wall clock stepped back mid-invocation: a histogram takes no negative
                # values (the SDK drops them too), and a zero would be a made-up figure.
                warn_once(
                    "otel:negative",
                    "lifecycle_probe: dropped a negative %s measurement (the clock moved back?)",
                    name,
                )
                continue
            by_attributes = measured_points.get(name)
            point = None if by_attributes is None else by_attributes.get(attributes)
            if point is None:
                # The point's first measurement (in a sync flush, every point's): made with
                # its value in place, rather than made empty and then added to.
                bounds, empty = first_of[name]
                point = new_point(Point)
                point.key = attributes
                point.bounds = bounds
                point.total = value
                point.count = 1
                point.exemplars = None
                if empty is None:
                    index = 0
                    point.buckets = None
                    point.min = _INF
                    point.max = -_INF
                else:
                    # OTel's explicit buckets include their upper bound: (b[i-1], b[i]].
                    index = bisect_left(bounds, value)  # type: ignore[arg-type]
                    point.buckets = first = empty.copy()
                    first[index] = 1
                    point.min = point.max = value
                if by_attributes is None:
                    measured_points[name] = {attributes: point}
                else:
                    by_attributes[attributes] = point
            else:
                point.total += value
                point.count += 1
                index = 0
                buckets = point.buckets
                if buckets is not None:
                    index = bisect_left(point.bounds or (), value)
                    buckets[index] += 1
                    if value < point.min:
                        point.min = value
                    if value > point.max:
                        point.max = value
            if span is not None:
                if point.exemplars is None:
                    point.exemplars = {}
                point.exemplars[index] = Exemplar(value, span.time_ns, span.span_id, span.trace_id)

    # -- exporting ------------------------------------------------------------------------------

    def collect(self, now_ns: int) -> list[MetricData] | None:
        """The points measured in the interval (delta) or ever (cumulative), or None when
        there are none. Nothing is reset here: call :meth:`exported` once the exporter
        took it."""
        if not self._measured:
            return None
        temporality = self.temporality
        start_ns = self._start_ns
        instruments = self._instruments
        cumulative = temporality == CUMULATIVE
        # tuple.__new__: the same MetricData without the Python-level constructor a
        # NamedTuple's own call goes through (one per instrument and export).
        make = tuple.__new__
        collected = []
        for name, measured in self._measured.items():
            unit, bounds = instruments[name]
            # A cumulative point keeps counting: what goes out is a copy.
            points = (
                tuple([p.copy() for p in measured.values()])
                if cumulative
                else tuple(measured.values())
            )
            collected.append(
                make(MetricData, (name, unit, temporality, start_ns, now_ns, points, bounds))
            )
        return collected

    def exported(self, now_ns: int) -> None:
        """The data of :meth:`collect` is on its way: a delta interval starts anew (with
        new points: the collected ones are the export's now), and a cumulative point's
        exemplars, like the SDK's reservoirs, start over."""
        if self.temporality == DELTA:
            self._measured = {}
            self._start_ns = now_ns
            self.recorded = 0
        else:
            for measured in self._measured.values():
                for point in measured.values():
                    point.exemplars = None
