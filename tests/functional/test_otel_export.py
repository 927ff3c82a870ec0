"""Records to OpenTelemetry: spans, their structure and attributes, metrics, flushing."""

from __future__ import annotations

import json
import threading
import time

import pytest
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from lifecycle_probe import probe
from lifecycle_probe.config import Config
from lifecycle_probe.environment import current_environment
from lifecycle_probe.imports import ImportRecord
from lifecycle_probe.records import SOURCE_RUNTIME
from lifecycle_probe.sinks import add_process_sink, remove_process_sink
from lifecycle_probe.sinks.otel import OtelSink
from lifecycle_probe.sinks.otel.memory import InMemoryMetricExporter
from lifecycle_probe.sinks.otel.trace_context import parse_traceparent, parse_xray
from lifecycle_probe.testing import FakeContext, fresh_environment

LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "orders",
    "AWS_LAMBDA_FUNCTION_VERSION": "7",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/28/[7]abc",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/orders",
    "AWS_REGION": "eu-west-1",
}
ARN = "arn:aws:lambda:eu-west-1:111122223333:function:orders:live"
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def otel(monkeypatch):
    """An OTel sink exporting to memory, attached to every probe; a Lambda-like environment."""
    for key, value in LAMBDA_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", raising=False)
    monkeypatch.delenv("OTEL_METRICS_EXEMPLAR_FILTER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    fresh_environment(environ=LAMBDA_ENV, init_duration_s=0.4)
    spans, metrics = InMemorySpanExporter(), InMemoryMetricExporter()
    sink = OtelSink(
        Config.resolve({}, flush="sync", import_min_ms=1.0),
        (),
        span_exporter=spans,
        metric_exporter=metrics,
    )
    add_process_sink(sink)
    yield spans, metrics
    remove_process_sink(sink)
    sink.shutdown()


def context(request_id="req-1"):
    return FakeContext(aws_request_id=request_id, function_name="orders", invoked_function_arn=ARN)


def by_name(spans):
    found: dict[str, list[object]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def points_of(metrics_data):
    """{metric name: (data, points)} of one export."""
    points = {}
    for resource_metrics in metrics_data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = (metric.data, list(metric.data.data_points))
    return points


def metric_points(exporter):
    """{metric name: (data, points)} of what was exported since the last call."""
    exports = exporter.get_finished_metrics()
    exporter.clear()
    points = {}
    for data in exports:
        points.update(points_of(data))
    return points


def tracer_that_saw(imports):
    """Stands in for ``active_tracer``: an import tracer whose INIT tree is ``imports``."""

    class Tracer:
        started_ns = current_environment().init_start_ns
        has_later = False

        def take_init(self):
            return imports

    return Tracer


def test_invocation_span_carries_every_attribute(otel, monkeypatch, tmp_path):
    spans, _ = otel
    # a private temporary directory holding one file (as the local Lambda gives each
    # environment its own)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    (tmp_path / "kept.bin").write_bytes(b"x" * 10_000)
    tmp_used = (tmp_path / "kept.bin").stat().st_blocks * 512

    @probe(exporter="none")
    def handler(event, ctx):
        return "ok"

    handler({"requestContext": {"http": {"method": "GET"}}}, context("req-1"))
    handler({}, context("req-2"))
    first, second = by_name(spans.get_finished_spans())["orders"]
    assert first.kind is SpanKind.SERVER
    assert dict(first.attributes) == {
        "faas.coldstart": True,
        "faas.invocation_id": "req-1",
        "faas.trigger": "http",
        "faas.name": "orders",
        "faas.version": "7",
        "faas.instance": "2026/11/28/[7]abc",
        "faas.max_memory": 256 * 1024 * 1024,
        "cloud.provider": "aws",
        "cloud.region": "eu-west-1",
        "cloud.resource_id": ARN,
        "cloud.account.id": "111122223333",
        "lifecycle.start": "cold",
        "lifecycle.invocation_seq": 1,
        "lifecycle.environment.id": current_environment().environment_id,
        "lifecycle.environment.age_s": first.attributes["lifecycle.environment.age_s"],
        "lifecycle.init_type": "on-demand",
        "lifecycle.outcome": "ok",
        "lifecycle.memory.rss_bytes": first.attributes["lifecycle.memory.rss_bytes"],
        "lifecycle.memory.share": first.attributes["lifecycle.memory.share"],
        "lifecycle.tmp.used_bytes": tmp_used,
    }
    assert 0.4 <= first.attributes["lifecycle.environment.age_s"] < 5
    # RSS after the invocation: this test process's, a share of the function's 256 MB
    rss = first.attributes["lifecycle.memory.rss_bytes"]
    assert 10 * 1024 * 1024 < rss < 2 * 1024**3
    assert first.attributes["lifecycle.memory.share"] == pytest.approx(rss / (256 * 1024 * 1024))
    # /tmp's growth: from the second invocation on
    assert second.attributes["lifecycle.tmp.used_bytes"] == tmp_used
    assert second.attributes["lifecycle.tmp.growth_bytes"] == 0
    assert second.attributes["faas.coldstart"] is False
    assert second.attributes["lifecycle.start"] == "warm"
    assert second.attributes["lifecycle.invocation_seq"] == 2
    assert second.attributes["faas.trigger"] == "other"
    assert 0 <= second.attributes["lifecycle.idle_s"] < 5
    assert "lifecycle.idle_s" not in first.attributes
    assert first.status.status_code is StatusCode.UNSET
    resource = dict(first.resource.attributes)
    assert resource["service.name"] == "orders"
    assert resource["cloud.platform"] == "aws_lambda"
    assert resource["faas.instance"] == "2026/11/28/[7]abc"


def test_init_span_in_the_first_trace_with_import_children(otel, monkeypatch):
    spans, _ = otel
    env = current_environment()
    start = env.init_start_ns
    # GIVEN an INIT whose import tree the tracer saw: pkg (5 ms) > pkg.sub (3 ms) > tiny (0.1 ms)
    imports = (
        ImportRecord(
            "pkg", start + 1_000_000, start + 6_000_000, 2_000_000, 1, None, "function", True
        ),
        ImportRecord(
            "pkg.sub", start + 2_000_000, start + 5_000_000, 2_900_000, 2, 1, "layer", True
        ),
        ImportRecord("tiny", start + 3_000_000, start + 3_100_000, 100_000, 3, 2, "runtime", True),
        ImportRecord(
            "deep", start + 3_200_000, start + 4_800_000, 1_600_000, 4, 3, "runtime", True
        ),
    )

    monkeypatch.setattr("lifecycle_probe.decorator.active_tracer", tracer_that_saw(imports))

    @probe(exporter="none")
    def handler(event, ctx):
        return None

    handler({}, context())
    handler({}, context("req-2"))
    found = by_name(spans.get_finished_spans())
    (init,) = found["lambda.init"]
    first, second = found["orders"]
    # THEN INIT is a child of the first invocation, in its trace, from INIT start to end
    assert init.parent is not None
    assert init.parent.span_id == first.context.span_id
    assert init.context.trace_id == first.context.trace_id
    assert (init.start_time, init.end_time) == (env.init_start_ns, env.init_end_ns)
    assert init.attributes["lifecycle.init.start_source"] == "process"
    assert init.attributes["lifecycle.init.end_source"] == SOURCE_RUNTIME
    assert init.attributes["lifecycle.init.estimated"] is False
    assert second.context.trace_id != first.context.trace_id
    # and the imports above 1 ms are its children; "tiny" (0.1 ms) is skipped and its
    # child "deep" hangs under the nearest ancestor with a span, pkg.sub
    imports_by_module = {s.attributes["code.namespace"]: s for s in found["lambda.import"]}
    assert set(imports_by_module) == {"pkg", "pkg.sub", "deep"}
    assert imports_by_module["pkg"].parent.span_id == init.context.span_id
    assert imports_by_module["pkg.sub"].parent.span_id == imports_by_module["pkg"].context.span_id
    assert imports_by_module["deep"].parent.span_id == imports_by_module["pkg.sub"].context.span_id
    assert imports_by_module["pkg.sub"].attributes["lifecycle.import.origin"] == "layer"
    assert imports_by_module["pkg.sub"].attributes["lifecycle.import.self_s"] == pytest.approx(
        0.0029
    )


def test_trace_continues_from_w3c_headers_first_then_xray(otel, monkeypatch):
    spans, _ = otel

    @probe(exporter="none")
    def handler(event, ctx):
        return None

    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY)
    http_event = {"requestContext": {"http": {}}, "headers": {"traceparent": TRACEPARENT}}
    handler(http_event, context("w3c"))
    handler({"Records": [{"eventSource": "aws:sqs"}]}, context("xray"))
    monkeypatch.delenv("_X_AMZN_TRACE_ID")
    handler({}, context("none"))
    w3c, xray, fresh = by_name(spans.get_finished_spans())["orders"]
    assert f"{w3c.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{w3c.parent.span_id:016x}" == "b7ad6b7169203331"
    assert w3c.parent.is_remote
    assert f"{xray.context.trace_id:032x}" == "5759e988bd862e3fe1be46a994272793"
    assert f"{xray.parent.span_id:016x}" == "53995c3f42cd8ad8"
    assert fresh.parent is None


def test_spans_are_recorded_even_when_xray_did_not_sample(otel, monkeypatch):
    spans, _ = otel
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY.replace("Sampled=1", "Sampled=0"))
    probe(exporter="none")(lambda e, c: None)({}, context())
    (span,) = by_name(spans.get_finished_spans())["orders"]
    assert f"{span.context.trace_id:032x}" == "5759e988bd862e3fe1be46a994272793"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TRACEPARENT, (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True)),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False),
        ),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        ("00-xyz-b7ad6b7169203331-01", None),
        ("zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        ("00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333_-01", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_traceparent(header, expected):
    assert parse_traceparent(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (XRAY, (0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8, True)),
        (
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            (0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8, False),
        ),
        ("Root=1-5759e988-bd862e3fe1be46a994272793", None),
        ("Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8", None),
        ("Parent=53995c3f42cd8ad8;Sampled=1", None),
        ("", None),
    ],
)
def test_parse_xray(header, expected):
    assert parse_xray(header) == expected


def test_raising_handler_gives_error_status_and_exception_event(otel):
    spans, metrics = otel

    @probe(exporter="none")
    def handler(event, ctx):
        raise ValueError("stock service down")

    with pytest.raises(ValueError, match="stock service down"):
        handler({}, context())
    (span,) = by_name(spans.get_finished_spans())["orders"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["lifecycle.outcome"] == "error"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    # the message may carry payload values: it never leaves the function
    assert event.attributes["exception.message"] == ""
    stack = event.attributes["exception.stacktrace"]
    assert "ValueError: stock service down" not in stack
    assert stack.startswith("Traceback (most recent call last):")
    assert stack.endswith("builtins.ValueError")
    assert "in handler" in stack
    assert metric_points(metrics)["faas.errors"][1][0].value == 1


def test_metrics_values_and_delta_temporality(otel):
    _spans, metrics = otel

    @probe(exporter="none")
    def handler(event, ctx):
        return None

    # In sync mode every invocation flushes: each collection holds that invocation's delta.
    per_invocation = []
    for n in range(3):
        handler({"Records": [{"eventSource": "aws:sqs"}]}, context(f"r{n}"))
        per_invocation.append(metric_points(metrics))
    first, second, third = per_invocation
    data, (invocations,) = first["faas.invocations"]
    assert data.aggregation_temporality is AggregationTemporality.DELTA
    assert dict(invocations.attributes) == {"faas.trigger": "pubsub"}
    assert [p["faas.invocations"][1][0].value for p in per_invocation] == [1, 1, 1]
    assert first["faas.coldstarts"][1][0].value == 1
    assert not second.get("faas.coldstarts", (None, []))[1]
    assert {p.attributes["lifecycle.start"]: p.value for p in first["lifecycle.starts"][1]} == {
        "cold": 1
    }
    assert {p.attributes["lifecycle.start"]: p.value for p in third["lifecycle.starts"][1]} == {
        "warm": 1
    }
    (init_duration,) = first["faas.init_duration"][1]
    assert init_duration.count == 1
    assert init_duration.sum == pytest.approx(0.4, abs=0.01)
    assert "faas.init_duration" not in second or not second["faas.init_duration"][1]
    assert [p["lifecycle.invocation_seq"][1][0].sum for p in per_invocation] == [1, 2, 3]
    assert "lifecycle.idle_duration" not in first
    assert second["lifecycle.idle_duration"][1][0].count == 1
    assert third["faas.invoke_duration"][1][0].count == 1
    assert first["faas.mem_usage"][1][0].max > 10 * 1024 * 1024
    assert all("faas.timeouts" not in p for p in per_invocation)  # nothing timed out
    # exemplars are off
    assert all(not p.exemplars for p in third["faas.invoke_duration"][1])


class HangingExporter(SpanExporter):
    """A collector that never answers: export blocks until released."""

    def __init__(self):
        self.release = threading.Event()

    def export(self, spans):
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.release.set()


@pytest.mark.parametrize(
    ("flush_timeout_ms", "function_timeout_s", "bound_s"),
    [
        (300, 60.0, 0.3),  # bounded by the flush timeout
        (5000, 0.4, 0.4),  # never more than the invocation's remaining time
    ],
)
def test_sync_flush_with_a_collector_that_never_answers_is_bounded(
    flush_timeout_ms, function_timeout_s, bound_s
):
    fresh_environment()
    exporter = HangingExporter()
    sink = OtelSink(
        Config.resolve({}, flush="sync", flush_timeout_ms=flush_timeout_ms),
        (),
        span_exporter=exporter,
        metric_exporter=InMemoryMetricExporter(),
        isolate_exports=True,
    )
    add_process_sink(sink)
    try:
        handler = probe(exporter="none")(lambda e, c: "answer")
        # the first drain imports the SDK: not what is measured, and bounded (0.5 s) too
        handler({}, FakeContext(timeout_s=0.5))
        started = time.monotonic()
        assert handler({}, FakeContext(timeout_s=function_timeout_s)) == "answer"
        elapsed = time.monotonic() - started
    finally:
        remove_process_sink(sink)
        exporter.release.set()
        sink.shutdown()
    assert elapsed < bound_s + 0.25


def sum_temporalities(lines):
    return {
        metric["name"]: metric["sum"]["aggregationTemporality"]
        for line in lines
        if "resourceMetrics" in line
        for resource in line["resourceMetrics"]
        for scope in resource["scopeMetrics"]
        for metric in scope["metrics"]
        if "sum" in metric
    }


@pytest.mark.parametrize(("preference", "expected"), [(None, 1), ("cumulative", 2)])
def test_file_export_temporality_is_delta_unless_the_standard_variable_says(
    tmp_path, monkeypatch, preference, expected
):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", raising=False)
    if preference:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", preference)
    fresh_environment()
    path = tmp_path / "otlp.jsonl"
    probe(exporter="otlp-file", otlp_file=str(path), flush="sync")(lambda e, c: None)({}, None)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    temporalities = sum_temporalities(lines)
    assert temporalities["faas.invocations"] == expected  # 1 = DELTA, 2 = CUMULATIVE
    assert set(temporalities.values()) == {expected}


def test_otlp_file_writes_one_export_request_per_line(tmp_path, monkeypatch):
    for key, value in LAMBDA_ENV.items():
        monkeypatch.setenv(key, value)
    fresh_environment(environ=LAMBDA_ENV)
    path = tmp_path / "otlp.jsonl"

    @probe(exporter="otlp-file", otlp_file=str(path), flush="sync")
    def handler(event, ctx):
        return None

    handler({}, context("a"))
    handler({}, context("b"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = [next(iter(line)) for line in lines]
    assert kinds == ["resourceSpans", "resourceMetrics", "resourceSpans", "resourceMetrics"]
    span_names = [
        span["name"]
        for line in lines
        if "resourceSpans" in line
        for resource in line["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    assert span_names.count("orders") == 2
    assert span_names.count("lambda.init") == 1
    resource = lines[0]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "orders"}} in resource


def test_a_forked_child_exports_on_its_own_even_if_the_parent_held_the_locks(tmp_path):
    # GIVEN an OTel sink whose drain lock is held (a parent thread mid-export) at the fork
    import os

    fresh_environment()
    path = tmp_path / "child.jsonl"
    sink = OtelSink(Config.resolve({}, flush="sync", otlp_file=str(path)), ("otlp-file",))
    add_process_sink(sink)
    handler = probe(exporter="none")(lambda e, c: None)
    sink._drain_lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:
            try:
                handler({}, None)  # WHEN the child invokes: it must export, not wait for ever
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
    finally:
        sink._drain_lock.release()
        remove_process_sink(sink)
        sink.shutdown()
    # THEN the child wrote its spans
    assert status == 0
    spans = [json.loads(line) for line in path.read_text().splitlines() if "resourceSpans" in line]
    assert len(spans) == 1
