"""OTel export delivery: failed exports kept for the next flush, temporality, exemplars,
sampling, and the metric aggregation itself."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from lifecycle_probe import probe
from lifecycle_probe._safe import _warned
from lifecycle_probe.config import Config
from lifecycle_probe.sinks import add_process_sink, remove_process_sink
from lifecycle_probe.sinks.otel import OtelSink
from lifecycle_probe.sinks.otel.memory import InMemoryMetricExporter
from lifecycle_probe.sinks.otel.metrics import (
    SECONDS,
    Metrics,
    exemplar_filter,
    preferred_temporality,
)
from lifecycle_probe.sinks.otel.pipeline import MAX_ATTEMPTS
from lifecycle_probe.testing import fresh_environment
from tests.functional.test_otel_export import LAMBDA_ENV, TRACEPARENT, XRAY, by_name, context
from tests.functional.test_otel_export import points_of as points

OTEL_VARIABLES = (
    "_X_AMZN_TRACE_ID",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_METRICS_EXEMPLAR_FILTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


class SwitchableSpanExporter(InMemorySpanExporter):
    """Keeps spans like the SDK's in-memory exporter, or refuses them while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.refused = 0

    def export(self, spans):
        if self.failing:
            self.refused += 1
            return SpanExportResult.FAILURE
        return super().export(spans)


@pytest.fixture
def lambda_env(monkeypatch):
    for key, value in LAMBDA_ENV.items():
        monkeypatch.setenv(key, value)
    for key in OTEL_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    fresh_environment(environ=LAMBDA_ENV, init_duration_s=0.4)
    return monkeypatch


@pytest.fixture
def exporters(lambda_env):
    """A sync OTel sink with switchable in-memory exporters, fed by every probe."""
    spans, metrics = SwitchableSpanExporter(), InMemoryMetricExporter()
    sink = OtelSink(
        Config.resolve({}, flush="sync"), (), span_exporter=spans, metric_exporter=metrics
    )
    add_process_sink(sink)
    yield spans, metrics, sink
    remove_process_sink(sink)
    sink.shutdown()


def handler():
    return probe(exporter="none")(lambda event, ctx: "ok")


def test_an_export_the_collector_refused_goes_out_with_the_next_flush(exporters):
    spans, metrics, _ = exporters
    function = handler()
    # GIVEN a collector refusing everything during the first invocation
    spans.failing = metrics.failing = True
    assert function({}, context("r1")) == "ok"
    assert spans.get_finished_spans() == ()
    assert metrics.get_finished_metrics() == []
    # WHEN it takes exports again at the second invocation's flush
    spans.failing = metrics.failing = False
    assert function({}, context("r2")) == "ok"
    # THEN both invocations' spans arrive, in one batch, and the INIT span with them
    found = by_name(spans.get_finished_spans())
    assert [s.attributes["faas.invocation_id"] for s in found["orders"]] == ["r1", "r2"]
    assert len(found["lambda.init"]) == 1
    # AND one delta point counts both invocations, over the interval since the first
    (exported,) = metrics.get_finished_metrics()
    data, (invocations,) = points(exported)["faas.invocations"]
    assert data.aggregation_temporality is AggregationTemporality.DELTA
    assert invocations.value == 2
    assert points(exported)["lifecycle.invocation_seq"][1][0].count == 2
    assert points(exported)["faas.coldstarts"][1][0].value == 1
    # AND the next flush starts a new interval where that one ended
    function({}, context("r3"))
    later = metrics.get_finished_metrics()[-1]
    (third,) = points(later)["faas.invocations"][1]
    assert third.value == 1
    assert third.start_time_unix_nano == invocations.time_unix_nano


def test_spans_refused_flush_after_flush_are_dropped_and_counted_metrics_are_kept(
    exporters, caplog
):
    spans, metrics, sink = exporters
    function = handler()
    # GIVEN a span exporter that refuses every batch and a metric exporter that is down
    spans.failing = metrics.failing = True
    _warned.discard("otel:dropped-spans")  # warned once per process: forget earlier tests'
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        for n in range(MAX_ATTEMPTS):
            function({}, context(f"r{n}"))
    # THEN after MAX_ATTEMPTS refusals the spans are given up (INIT + 3 invocations)
    assert spans.refused == MAX_ATTEMPTS
    assert sink._pipeline is not None
    assert sink._pipeline.dropped_spans == MAX_ATTEMPTS + 1
    assert "dropping spans" in caplog.text
    # AND the metric points are not: the next export counts every invocation
    spans.failing = metrics.failing = False
    function({}, context("last"))
    (exported,) = metrics.get_finished_metrics()
    assert points(exported)["faas.invocations"][1][0].value == MAX_ATTEMPTS + 1
    assert [s.attributes["faas.invocation_id"] for s in spans.get_finished_spans()] == ["last"]


def test_cumulative_temporality_from_the_standard_variable(lambda_env, exporters):
    lambda_env.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Cumulative")
    _, metrics, _ = exporters
    function = handler()
    for n in range(3):
        function({}, context(f"r{n}"))
    exports = [points(data) for data in metrics.get_finished_metrics()]
    assert len(exports) == 3
    counts = [e["faas.invocations"][1][0] for e in exports]
    assert [p.value for p in counts] == [1, 2, 3]
    assert len({p.start_time_unix_nano for p in counts}) == 1  # one series from the start
    assert exports[2]["faas.invocations"][0].aggregation_temporality is (
        AggregationTemporality.CUMULATIVE
    )
    # the cold start stays counted in every cumulative export
    assert [e["faas.coldstarts"][1][0].value for e in exports] == [1, 1, 1]


def test_exemplars_point_at_the_invocation_span_when_the_filter_asks(lambda_env, exporters):
    lambda_env.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_on")
    spans, metrics, _ = exporters
    handler()({}, context("r1"))
    (span,) = by_name(spans.get_finished_spans())["orders"]
    (exported,) = metrics.get_finished_metrics()
    (duration,) = points(exported)["faas.invoke_duration"][1]
    (exemplar,) = duration.exemplars
    assert (exemplar.trace_id, exemplar.span_id) == (span.context.trace_id, span.context.span_id)
    assert exemplar.value == pytest.approx(duration.sum)
    (count,) = points(exported)["faas.invocations"][1]
    assert [e.span_id for e in count.exemplars] == [span.context.span_id]


def test_a_sampler_named_by_the_standard_variable_decides_per_invocation(lambda_env, exporters):
    lambda_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    spans, metrics, _ = exporters
    function = handler()
    # GIVEN X-Ray did not sample the first request and sampled the second
    lambda_env.setenv("_X_AMZN_TRACE_ID", XRAY.replace("Sampled=1", "Sampled=0"))
    function({}, context("unsampled"))
    lambda_env.setenv("_X_AMZN_TRACE_ID", XRAY)
    function({}, context("sampled"))
    # THEN only the sampled invocation has spans (its INIT went with the dropped one)
    found = by_name(spans.get_finished_spans())
    assert [s.attributes["faas.invocation_id"] for s in found["orders"]] == ["sampled"]
    assert "lambda.init" not in found
    # AND metrics count both invocations all the same
    total = sum(
        points(data)["faas.invocations"][1][0].value for data in metrics.get_finished_metrics()
    )
    assert total == 2


def test_w3c_tracestate_is_continued_and_never_paired_with_xray(lambda_env, exporters):
    spans, _, _ = exporters
    function = handler()
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc,other=1"}
    function({"requestContext": {"http": {}}, "headers": headers}, context("w3c"))
    # a tracestate without a valid traceparent: the X-Ray context is used, without it
    lambda_env.setenv("_X_AMZN_TRACE_ID", XRAY)
    bad = {"traceparent": "garbage", "tracestate": "vendor=abc"}
    function({"requestContext": {"http": {}}, "headers": bad}, context("xray"))
    w3c, xray = by_name(spans.get_finished_spans())["orders"]
    assert w3c.context.trace_state.to_header() == "vendor=abc,other=1"
    assert f"{xray.context.trace_id:032x}" == "5759e988bd862e3fe1be46a994272793"
    assert xray.context.trace_state.to_header() == ""


def metrics_for_test(temporality=AggregationTemporality.DELTA):
    return Metrics(
        Resource({"service.name": "t"}),
        InstrumentationScope("t"),
        start_ns=1,
        temporality=temporality,
        exemplars="always_off",
    )


def test_histogram_buckets_include_their_upper_bound():
    metrics = metrics_for_test()
    # 1 ms is the first bound: it falls in the first bucket, just above it in the second
    for value in (0.0005, 0.001, 0.0011, 1000.0):
        metrics._add("faas.invoke_duration", (), value)
    data = metrics.collect(now_ns=2)
    assert data is not None
    (point,) = points(data)["faas.invoke_duration"][1]
    assert point.explicit_bounds == SECONDS
    assert len(point.bucket_counts) == len(SECONDS) + 1
    assert point.bucket_counts[:3] == [2, 1, 0]
    assert point.bucket_counts[-1] == 1  # above 900 s: the overflow bucket
    assert (point.count, point.min, point.max) == (4, 0.0005, 1000.0)
    assert point.sum == pytest.approx(1000.0026)


def test_nothing_measured_means_nothing_to_export():
    metrics = metrics_for_test()
    assert metrics.collect(now_ns=2) is None
    metrics._add("faas.invocations", (("faas.trigger", "http"),), 1)
    assert metrics.collect(now_ns=3) is not None
    metrics.exported(now_ns=3)
    assert metrics.collect(now_ns=4) is None  # delta: the interval after is empty


@pytest.mark.parametrize(
    ("value", "expected", "warns"),
    [
        ("", AggregationTemporality.DELTA, False),
        ("delta", AggregationTemporality.DELTA, False),
        ("LOWMEMORY", AggregationTemporality.DELTA, False),
        ("cumulative", AggregationTemporality.CUMULATIVE, False),
        ("sometimes", AggregationTemporality.DELTA, True),
    ],
)
def test_temporality_preference_values(value, expected, warns, caplog):
    _warned.discard("otel:temporality")  # warned once per process: forget earlier tests'
    environ = {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": value}
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        assert preferred_temporality(environ) is expected
    assert ("using delta" in caplog.text) is warns


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "always_off"),
        ("TRACE_BASED", "trace_based"),
        ("always_on", "always_on"),
        ("maybe", "always_off"),
    ],
)
def test_exemplar_filter_values(value, expected):
    assert exemplar_filter({"OTEL_METRICS_EXEMPLAR_FILTER": value}) == expected


class RecordingSpanExporter(SwitchableSpanExporter):
    """Writes the invocation ids of each batch it takes to a file: a forked child's
    exports, read back by the parent."""

    def __init__(self, path) -> None:
        super().__init__()
        self.path = path

    def export(self, spans):
        result = super().export(spans)
        if result is SpanExportResult.SUCCESS:
            ids = [s.attributes["faas.invocation_id"] for s in spans if s.kind.name == "SERVER"]
            with open(self.path, "a") as file:
                file.write(f"spans {' '.join(ids)}\n")
        return result


class RecordingMetricExporter(InMemoryMetricExporter):
    """Writes each export's faas.invocations count to a file."""

    def __init__(self, path) -> None:
        super().__init__()
        self.path = path

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis, **kwargs)
        if not self.failing:
            (count,) = points(metrics_data)["faas.invocations"][1]
            with open(self.path, "a") as file:
                file.write(f"invocations {count.value}\n")
        return result


def test_a_forked_child_exports_only_its_own_invocations(lambda_env, tmp_path):
    # GIVEN a parent whose collector refused its invocation: spans waiting, a point counted
    import os

    path = tmp_path / "child.txt"
    spans, metrics = RecordingSpanExporter(path), RecordingMetricExporter(path)
    sink = OtelSink(
        Config.resolve({}, flush="sync"), (), span_exporter=spans, metric_exporter=metrics
    )
    add_process_sink(sink)
    try:
        spans.failing = metrics.failing = True
        function = handler()
        function({}, context("parent"))
        # WHEN a forked child (a Managed Instances worker) serves an invocation
        pid = os.fork()
        if pid == 0:
            try:
                spans.failing = metrics.failing = False
                function({}, context("child"))
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
    finally:
        remove_process_sink(sink)
        sink.shutdown()
    assert status == 0
    # THEN the child exported and counted its own invocation only
    assert path.read_text().splitlines() == ["spans child", "invocations 1"]
