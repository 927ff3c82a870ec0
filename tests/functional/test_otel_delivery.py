"""OTel export delivery: failed exports kept for the next flush, temporality, exemplars,
sampling, and the metric aggregation itself."""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lifecycle_probe import probe
from lifecycle_probe._safe import _warned
from lifecycle_probe.config import Config
from lifecycle_probe.sinks import add_process_sink, remove_process_sink
from lifecycle_probe.sinks.otel import OtelSink
from lifecycle_probe.sinks.otel.channels import MAX_ATTEMPTS
from lifecycle_probe.sinks.otel.memory import InMemoryMetricExporter
from lifecycle_probe.sinks.otel.metrics import (
    CUMULATIVE,
    DELTA,
    SECONDS,
    Metrics,
    exemplar_filter,
    preferred_temporality,
)
from lifecycle_probe.testing import fresh_environment
from tests.functional.test_otel_export import (
    LAMBDA_ENV,
    TRACEPARENT,
    XRAY,
    by_name,
    context,
    tracer_that_saw,
)
from tests.functional.test_otel_export import points_of as sdk_points

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
def otel_sink(lambda_env):
    """Builds a sync OTel sink with switchable in-memory exporters, fed by every probe,
    after setting the given OTel variables (they are read when the sink is built)."""
    sinks = []

    def build(**variables):
        for key, value in variables.items():
            lambda_env.setenv(key, value)
        spans, metrics = SwitchableSpanExporter(), InMemoryMetricExporter()
        sink = OtelSink(
            Config.resolve({}, flush="sync"), (), span_exporter=spans, metric_exporter=metrics
        )
        add_process_sink(sink)
        sinks.append(sink)
        return spans, metrics, sink

    yield build
    for sink in sinks:
        remove_process_sink(sink)
        sink.shutdown()


@pytest.fixture
def exporters(otel_sink):
    return otel_sink()


def handler():
    return probe(exporter="none")(lambda event, ctx: "ok")


def two_invocations_through(sink):
    """Invoke a probed handler twice (requests r1 and r2) with ``sink`` attached."""
    add_process_sink(sink)
    try:
        function = handler()
        function({}, context("r1"))
        function({}, context("r2"))
    finally:
        remove_process_sink(sink)


def invocations_per_export(metrics):
    """The faas.invocations point of each metric export, oldest first."""
    return [points(data)["faas.invocations"][1][0] for data in metrics.get_finished_metrics()]


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
    # AND the refused metric export goes out as it was, then the second invocation's:
    # two delta points over two intervals that meet, one invocation each
    first, second = invocations_per_export(metrics)
    assert (first.value, second.value) == (1, 1)
    assert first.time_unix_nano == second.start_time_unix_nano
    data = points(metrics.get_finished_metrics()[0])["faas.invocations"][0]
    assert data.aggregation_temporality is AggregationTemporality.DELTA
    assert points(metrics.get_finished_metrics()[0])["faas.coldstarts"][1][0].value == 1


class AmbiguousSpanExporter(SwitchableSpanExporter):
    """Takes the spans but answers FAILURE once: a reply lost to a freeze."""

    def export(self, spans):
        InMemorySpanExporter.export(self, spans)  # received, whatever the reply says
        if self.failing:
            self.failing = False
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


class AmbiguousMetricExporter(InMemoryMetricExporter):
    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        was_failing, self.failing = self.failing, False
        super().export(metrics_data, timeout_millis, **kwargs)
        return MetricExportResult.FAILURE if was_failing else MetricExportResult.SUCCESS


def test_an_export_whose_reply_was_lost_is_resent_identical_never_merged(lambda_env):
    # GIVEN a collector that receives the first invocation's export but whose reply is lost
    spans, metrics = AmbiguousSpanExporter(), AmbiguousMetricExporter()
    spans.failing = metrics.failing = True
    sink = OtelSink(
        Config.resolve({}, flush="sync"), (), span_exporter=spans, metric_exporter=metrics
    )
    # WHEN two invocations export
    two_invocations_through(sink)
    sink.shutdown()
    # THEN the first export is received twice, identical: same span ids, same interval
    received = spans.get_finished_spans()
    unique = {s.context.span_id: s for s in received}
    assert len(received) == 2 + 3  # r1 + INIT, then r1 + INIT again with r2
    assert sorted(
        str(dict(s.attributes or {}).get("faas.invocation_id", "")) for s in unique.values()
    ) == [
        "",
        "r1",
        "r2",
    ]
    first, again, second = invocations_per_export(metrics)
    assert first == again  # a backend can drop the duplicate
    # AND, duplicates dropped, every invocation is counted once
    unique_points = {(p.start_time_unix_nano, p.time_unix_nano): p.value for p in (first, second)}
    assert sum(unique_points.values()) == 2


def dropped_by_reason(metric_exporter):
    """{(reason, signal): count} of lifecycle.telemetry.dropped in each metric export."""
    found = []
    for data in metric_exporter.get_finished_metrics():
        _, dropped = points(data).get("lifecycle.telemetry.dropped", (None, []))
        found.append({(p.attributes["reason"], p.attributes["signal"]): p.value for p in dropped})
    return found


def test_lambdas_reports_given_up_are_counted_once_in_the_export_carrying_figures(
    exporters, monkeypatch
):
    from lifecycle_probe import decorator
    from lifecycle_probe.rare_records import PlatformFigures

    _, metrics, _ = exporters
    # GIVEN Lambda's figures of r1 reaching the second export, with 3 reports given up
    # before it (more waited than the listener keeps), and nothing given up after
    figures = PlatformFigures(request_id="r1", billed_duration_ms=4, max_memory_used_mb=70)
    arriving = iter([(), (figures,), ()])
    monkeypatch.setattr(decorator, "take_figures", lambda extension: next(arriving))
    counts = iter([0, 3, 0])
    monkeypatch.setattr(decorator, "take_evicted", lambda extension: next(counts))
    function = handler()
    # WHEN three invocations are exported
    for request_id in ("r1", "r2", "r3"):
        function({}, context(request_id))
    # THEN the second export counts the 3, for both signals the reports would have fed
    # (their lifecycle.platform.report events and lifecycle.platform.* points), beside
    # the figures that did arrive; the exports before and after it count none
    reason = "platform_figures_evicted"
    assert dropped_by_reason(metrics) == [
        {},
        {(reason, "spans"): 3, (reason, "metrics"): 3},
        {},
    ]
    second = points(metrics.get_finished_metrics()[1])
    assert [p.sum for p in second["lifecycle.platform.billed_duration"][1]] == [4]


def test_a_record_the_full_queue_gives_up_passes_on_lambdas_reports_it_counted(lambda_env):
    from lifecycle_probe.sinks.otel import MAX_QUEUED
    from lifecycle_probe.testing import MemorySink

    memory = MemorySink()
    add_process_sink(memory)
    try:
        probe(exporter="none")(lambda event, context: None)({}, context("r1"))
    finally:
        remove_process_sink(memory)
    (record,) = memory.records
    metrics = InMemoryMetricExporter()
    sink = OtelSink(
        Config.resolve(environ={}), span_exporter=InMemorySpanExporter(), metric_exporter=metrics
    )
    # GIVEN the oldest record waiting counts 5 of Lambda's reports given up
    sink._enqueue(record.replace(platform_evicted=5))
    # WHEN the queue overflows and gives that record up (exports hang: nothing drains)
    for _ in range(MAX_QUEUED):
        sink._enqueue(record)
    sink.drain(5.0)
    # THEN the export counts the record given up and the 5 reports it carried the count of
    assert dropped_by_reason(metrics) == [
        {
            ("queue_full", "spans"): 1,
            ("queue_full", "metrics"): 1,
            ("platform_figures_evicted", "spans"): 5,
            ("platform_figures_evicted", "metrics"): 5,
        }
    ]


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
    assert "dropping the oldest" in caplog.text
    # AND the metric exports are not: each goes out once the collector is back
    spans.failing = metrics.failing = False
    function({}, context("last"))
    assert [p.value for p in invocations_per_export(metrics)] == [1] * (MAX_ATTEMPTS + 1)
    assert [s.attributes["faas.invocation_id"] for s in spans.get_finished_spans()] == ["last"]


def test_one_large_invocation_is_exported_whole(lambda_env, otel_sink, monkeypatch):
    # GIVEN an INIT that imported more modules than the exporter's waiting room holds
    from lifecycle_probe.environment import current_environment
    from lifecycle_probe.records import ImportRecord
    from lifecycle_probe.sinks.otel.channels import MAX_WAITING_SPANS

    start = current_environment().init_start_ns
    count = MAX_WAITING_SPANS + 100
    imports = tuple(
        ImportRecord(f"m{n}", start + n, start + n + 2_000_000, 2_000_000, n + 1, None, "x", True)
        for n in range(count)
    )

    monkeypatch.setattr("lifecycle_probe.decorator.active_tracer", tracer_that_saw(imports))
    spans, _, sink = otel_sink()
    # WHEN its first invocation is exported, every import (2 ms) above the 1 ms threshold
    handler()({}, context("big"))
    # THEN nothing was dropped: the invocation, INIT and every import arrive together
    found = by_name(spans.get_finished_spans())
    assert len(found["orders"]) == 1
    assert len(found["lambda.init"]) == 1
    assert len(found["lambda.import"]) == count
    assert sink._pipeline is not None
    assert sink._pipeline.dropped_spans == 0


class SlowFailingSpanExporter(SwitchableSpanExporter):
    def export(self, spans):
        time.sleep(0.15)
        self.refused += 1
        return SpanExportResult.FAILURE


def test_a_slow_failing_destination_does_not_starve_the_next(lambda_env, tmp_path):
    # GIVEN a first destination that takes 150 ms to refuse, with a 100 ms flush bound,
    # and an OTLP file after it
    path = tmp_path / "otlp.jsonl"
    slow = SlowFailingSpanExporter()
    sink = OtelSink(
        Config.resolve({}, flush="sync", flush_timeout_ms=100, otlp_file=str(path)),
        ("otlp-file",),
        span_exporter=slow,
        isolate_exports=False,  # the test waits for the whole drain
    )
    # WHEN two invocations export
    two_invocations_through(sink)
    # THEN the file got both invocations' spans and metrics, flush by flush
    import json

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [next(iter(line)) for line in lines] == ["resourceSpans", "resourceMetrics"] * 2
    assert slow.refused == 2
    sink.shutdown(timeout_s=1.0)


def threaded_sink(span_exporter, *, flush_timeout_ms):
    """A sync sink that exports on its own thread, as it does with a real collector."""
    return OtelSink(
        Config.resolve({}, flush="sync", flush_timeout_ms=flush_timeout_ms),
        (),
        span_exporter=span_exporter,
        isolate_exports=True,
    )


class BlockingSpanExporter(InMemorySpanExporter):
    """Blocks its first export until released; counts every call."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.calls = 0

    def export(self, spans):
        self.calls += 1
        self.release.wait(30)
        return super().export(spans)


def test_drains_that_queued_behind_a_hung_export_are_served_by_one(lambda_env):
    # GIVEN an exporter hung in its first export, and sync invocations bounded at 50 ms
    exporter = BlockingSpanExporter()
    sink = threaded_sink(exporter, flush_timeout_ms=50)
    add_process_sink(sink)
    try:
        function = handler()
        # WHEN five invocations return, each after its bound, while it hangs
        for n in range(5):
            assert function({}, context(f"r{n}")) == "ok"
        exporter.release.set()
        assert sink.drain(5.0)
    finally:
        remove_process_sink(sink)
        exporter.release.set()
        sink.shutdown(timeout_s=5.0)
    # THEN the expired drains exported nothing on their own: one more export took the rest
    assert exporter.calls == 2
    ids = [
        dict(s.attributes or {}).get("faas.invocation_id") for s in exporter.get_finished_spans()
    ]
    assert sorted(str(i) for i in ids if i) == ["r0", "r1", "r2", "r3", "r4"]


def test_otel_sdk_disabled_exports_nothing(otel_sink):
    spans, metrics, sink = otel_sink(OTEL_SDK_DISABLED="true")
    assert handler()({}, context("r1")) == "ok"
    assert sink.disabled
    assert spans.get_finished_spans() == ()
    assert metrics.get_finished_metrics() == []


def test_cumulative_temporality_from_the_standard_variable(otel_sink):
    _, metrics, _ = otel_sink(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="Cumulative")
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
    # and an exported histogram point stays as it was sent
    durations = [e["faas.invoke_duration"][1][0] for e in exports]
    assert [sum(p.bucket_counts) for p in durations] == [p.count for p in durations] == [1, 2, 3]


def test_exemplars_point_at_the_invocation_span_when_the_filter_asks(otel_sink):
    spans, metrics, _ = otel_sink(OTEL_METRICS_EXEMPLAR_FILTER="always_on")
    handler()({}, context("r1"))
    (span,) = by_name(spans.get_finished_spans())["orders"]
    (exported,) = metrics.get_finished_metrics()
    (duration,) = points(exported)["faas.invoke_duration"][1]
    (exemplar,) = duration.exemplars
    assert (exemplar.trace_id, exemplar.span_id) == (span.context.trace_id, span.context.span_id)
    assert exemplar.value == pytest.approx(duration.sum)
    (count,) = points(exported)["faas.invocations"][1]
    assert [e.span_id for e in count.exemplars] == [span.context.span_id]


def test_a_sampler_named_by_the_standard_variable_decides_per_invocation(lambda_env, otel_sink):
    spans, metrics, _ = otel_sink(OTEL_TRACES_SAMPLER="parentbased_always_on")
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


def metrics_for_test(temporality=DELTA):
    return Metrics(start_ns=1, temporality=temporality, exemplars="always_off")


def points(data):
    """{metric name: (data, points)} of one collection (the probe's own, or the SDK's
    MetricsData an in-memory exporter got)."""
    if isinstance(data, list):
        return {metric.name: (metric, list(metric.points)) for metric in data}
    return sdk_points(data)


def test_histogram_buckets_include_their_upper_bound():
    metrics = metrics_for_test()
    # 1 ms is the first bound: it falls in the first bucket, just above it in the second
    for value in (0.0005, 0.001, 0.0011, 1000.0):
        metrics._add("faas.invoke_duration", (), value)
    data = metrics.collect(now_ns=2)
    assert data is not None
    metric, (point,) = points(data)["faas.invoke_duration"]
    assert metric.bounds == SECONDS
    assert len(point.buckets) == len(SECONDS) + 1
    assert point.buckets[:3] == [2, 1, 0]
    assert point.buckets[-1] == 1  # above 900 s: the overflow bucket
    assert (point.count, point.min, point.max) == (4, 0.0005, 1000.0)
    assert point.total == pytest.approx(1000.0026)


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
        ("", DELTA, False),
        ("delta", DELTA, False),
        ("LOWMEMORY", DELTA, False),
        ("cumulative", CUMULATIVE, False),
        ("sometimes", DELTA, True),
    ],
)
def test_temporality_preference_values(value, expected, warns, caplog):
    _warned.discard("otel:temporality")  # warned once per process: forget earlier tests'
    environ = {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": value}
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        assert preferred_temporality(environ) == expected
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


def test_span_ids_do_not_follow_the_functions_random_seed():
    from lifecycle_probe.sinks.otel.spans import _span_id

    # GIVEN a function that seeds random for its own reasons, twice the same way
    random.seed(7)
    first, first_draw = _span_id(), random.random()
    random.seed(7)
    second, second_draw = _span_id(), random.random()
    # THEN the probe's ids differ, and the function's own sequence is untouched
    assert first != second
    assert first_draw == second_draw


def test_a_negative_measurement_is_dropped_with_a_warning(caplog):
    metrics = metrics_for_test()
    _warned.discard("otel:negative")  # warned once per process: forget earlier tests'
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        metrics._add("faas.invoke_duration", (), -0.002)
    assert metrics.collect(now_ns=2) is None
    assert "dropped a negative faas.invoke_duration" in caplog.text


def test_a_flush_with_no_time_left_leaves_everything_for_the_next(lambda_env):
    # GIVEN a pipeline holding one invocation's spans and points
    from lifecycle_probe.sinks.otel.pipeline import Pipeline
    from lifecycle_probe.testing import capture_records

    with capture_records() as captured:
        handler()({}, context("r1"))
    (record,) = captured.records
    spans, metrics = SwitchableSpanExporter(), InMemoryMetricExporter()
    pipeline = Pipeline(Config.resolve({}), record.function, (), spans, metrics)
    pipeline.emit(record)
    # WHEN a drain whose caller has given up flushes it: nothing is sent
    assert pipeline.flush(0.0) is False
    assert spans.get_finished_spans() == ()
    assert metrics.get_finished_metrics() == []
    # THEN the next flush with time sends it all
    assert pipeline.flush(1.0) is True
    assert len(spans.get_finished_spans()) == 2  # the invocation and INIT
    assert [p.value for p in invocations_per_export(metrics)] == [1]
    pipeline.shutdown()


def test_cumulative_exemplars_start_over_with_each_export(otel_sink):
    spans, metrics, _ = otel_sink(
        OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="cumulative",
        OTEL_METRICS_EXEMPLAR_FILTER="always_on",
    )
    function = handler()
    function({}, context("r1"))
    function({}, context("r2"))
    second_span = by_name(spans.get_finished_spans())["orders"][1]
    last = points(metrics.get_finished_metrics()[-1])["faas.invocations"][1][0]
    # the cumulative count covers both, its exemplars only what came since the last export
    assert last.value == 2
    assert [e.span_id for e in last.exemplars] == [second_span.context.span_id]


class RecordingSampler:
    """A custom sampler: keeps every span, sets an attribute set and a trace state."""

    def __init__(self) -> None:
        self.contexts: list[object] = []

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None):
        from opentelemetry.sdk.trace.sampling import Decision, SamplingResult
        from opentelemetry.trace import TraceState

        self.contexts.append(parent_context)
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE, {"sampled.by": "custom"}, TraceState([("ours", "1")])
        )

    def get_description(self) -> str:
        return "RecordingSampler"


def one_record():
    from lifecycle_probe.testing import capture_records

    with capture_records() as captured:
        handler()({}, context("r1"))
    (record,) = captured.records
    return record


def test_a_samplers_attributes_and_trace_state_are_the_spans_as_in_the_sdk(lambda_env):
    from lifecycle_probe.sinks.otel.spans import Spans

    sampler = RecordingSampler()
    spans = Spans(1_000_000, sampler)  # type: ignore[arg-type]
    made, _ = spans.of(one_record())
    invocation = made[0]
    assert dict(invocation.attributes or {}) == {"sampled.by": "custom"}
    assert invocation.trace_state == "ours=1"
    assert made[1].trace_state == "ours=1"  # INIT, in the same trace


def test_the_sampler_never_sees_a_span_that_happens_to_be_current(lambda_env):
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, use_span

    from lifecycle_probe.sinks.otel.spans import Spans

    # GIVEN a parent-based sampler that drops root spans, and an unrelated sampled span
    # current on this thread (a user's, or another instrumentation's)
    spans = Spans(1_000_000, ParentBased(ALWAYS_OFF))
    record = one_record()
    unrelated = NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED)))
    with use_span(unrelated):
        made, (_, _, sampled) = spans.of(record)
    # THEN the invocation, with no incoming context, is a root: dropped
    assert (made, sampled) == ([], False)


def test_shutdown_exports_what_waits(exporters):
    spans, metrics, sink = exporters
    spans.failing = metrics.failing = True
    handler()({}, context("r1"))
    spans.failing = metrics.failing = False
    sink.shutdown()
    assert [
        s.attributes["faas.invocation_id"] for s in by_name(spans.get_finished_spans())["orders"]
    ] == ["r1"]
    assert [p.value for p in invocations_per_export(metrics)] == [1]


class Interrupted(BaseException):
    """Not an Exception: what an exporter's thread must survive all the same."""


class InterruptingSpanExporter(InMemorySpanExporter):
    def __init__(self) -> None:
        super().__init__()
        self.interrupt = True

    def export(self, spans):
        if self.interrupt:
            self.interrupt = False
            raise Interrupted
        return super().export(spans)


def test_the_export_thread_outlives_an_exporter_that_raises_anything(lambda_env, caplog):
    exporter = InterruptingSpanExporter()
    sink = threaded_sink(exporter, flush_timeout_ms=2000)
    two_invocations_through(sink)
    started = time.monotonic()
    assert sink.drain(5.0)  # the thread still serves drains, at once
    assert time.monotonic() - started < 2.0
    sink.shutdown()
    ids = [
        dict(s.attributes or {}).get("faas.invocation_id") for s in exporter.get_finished_spans()
    ]
    assert {"r1", "r2"} <= set(ids)


@pytest.mark.parametrize("version", ["1.20.0", "broken"])
def test_an_sdk_that_cannot_serve_the_sampler_is_said_once_and_spans_are_kept(
    otel_sink, monkeypatch, caplog, version
):
    # GIVEN a sampler named, and an SDK (the function's own, first on sys.path) that is
    # too old, or that fails to build its provider
    import opentelemetry.sdk.trace
    import opentelemetry.sdk.version

    if version == "broken":

        def broken(*args, **kwargs):
            raise RuntimeError("no provider here")

        monkeypatch.setattr(opentelemetry.sdk.trace, "TracerProvider", broken)
    else:
        monkeypatch.setattr(opentelemetry.sdk.version, "__version__", version)
    _warned.discard("otel:sampler")
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        spans, metrics, _ = otel_sink(OTEL_TRACES_SAMPLER="always_off")
        function = handler()
        # WHEN two invocations export
        assert function({}, context("r1")) == "ok"
        assert function({}, context("r2")) == "ok"
    # THEN one warning says it, and every invocation's spans and points still go out
    said = [r.getMessage() for r in caplog.records if "OTEL_TRACES_SAMPLER" in r.getMessage()]
    assert len(said) == 1, said
    assert "needs opentelemetry-sdk >= 1.27" in said[0]
    if version != "broken":
        assert f"version {version}" in said[0]
    found = by_name(spans.get_finished_spans())
    assert [s.attributes["faas.invocation_id"] for s in found["orders"]] == ["r1", "r2"]
    assert [p.value for p in invocations_per_export(metrics)] == [1, 1]
