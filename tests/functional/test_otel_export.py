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
from lifecycle_probe.records import SOURCE_RUNTIME, ImportRecord
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


def test_otlp_json_carries_every_attribute_kind_exactly():
    from lifecycle_probe.sinks.otel.encoding import Encoder
    from lifecycle_probe.sinks.otel.metrics import Metrics
    from lifecycle_probe.sinks.otel.spans import KIND_SERVER, STATUS_ERROR, Span

    # GIVEN a span whose attributes are of every kind OTLP types, with awkward values
    values = {
        "text": 'quote " backslash \\ newline \n tab \t unicode é ✓ \u2028',
        "yes": True,
        "no": False,
        "big": 2**63 - 1,
        "negative": -5,
        "ratio": 0.1,
        "tiny": 1e-05,
        "not a number": float("nan"),
        "infinite": float("inf"),
        "raw": b"\x00\xff",
        "list": [1, "a", 2.5, True],
    }
    span = Span(
        "orders",
        0x0AF7651916CD43DD8448EB211C80319C,
        0x1,
        0xB7AD6B7169203331,
        values,
        10,
        20,
        trace_state="vendor=abc",
        parent_remote=True,
        kind=KIND_SERVER,
        status_code=STATUS_ERROR,
        status_message="ValueError",
        events=[("exception", 15, {"exception.type": "ValueError"})],
    )
    encoder = Encoder({"service.name": "orders", "faas.max_memory": 268435456}, ("probe", "1.0"))
    # WHEN it is encoded
    line = encoder.spans([span])
    # THEN it is one line of JSON in OTLP's protobuf JSON mapping
    assert b"\n" not in line
    request = json.loads(line)
    (resource_spans,) = request["resourceSpans"]
    assert resource_spans["resource"]["attributes"] == [
        {"key": "service.name", "value": {"stringValue": "orders"}},
        {"key": "faas.max_memory", "value": {"intValue": "268435456"}},
    ]
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"] == {"name": "probe", "version": "1.0"}
    (encoded,) = scope_spans["spans"]
    assert {k: v for k, v in encoded.items() if k not in ("attributes", "events")} == {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "0000000000000001",
        "traceState": "vendor=abc",
        "parentSpanId": "b7ad6b7169203331",
        "flags": 0x300,
        "name": "orders",
        "kind": 2,
        "startTimeUnixNano": "10",
        "endTimeUnixNano": "20",
        "status": {"message": "ValueError", "code": 2},
    }
    assert {a["key"]: a["value"] for a in encoded["attributes"]} == {
        "text": {"stringValue": values["text"]},
        "yes": {"boolValue": True},
        "no": {"boolValue": False},
        "big": {"intValue": "9223372036854775807"},
        "negative": {"intValue": "-5"},
        "ratio": {"doubleValue": 0.1},
        "tiny": {"doubleValue": 1e-05},
        "not a number": {"doubleValue": "NaN"},
        "infinite": {"doubleValue": "Infinity"},
        "raw": {"bytesValue": "AP8="},
        "list": {
            "arrayValue": {
                "values": [
                    {"intValue": "1"},
                    {"stringValue": "a"},
                    {"doubleValue": 2.5},
                    {"boolValue": True},
                ]
            }
        },
    }
    assert encoded["events"] == [
        {
            "timeUnixNano": "15",
            "name": "exception",
            "attributes": [{"key": "exception.type", "value": {"stringValue": "ValueError"}}],
        }
    ]
    # AND metric points: an integer sum as asInt, a float one as asDouble, a histogram
    metrics = Metrics(start_ns=1, exemplars="always_on")
    metrics._span = None
    metrics._add("faas.invocations", (("faas.trigger", "http"),), 1)
    metrics._add("faas.invocations", (("faas.trigger", "http"),), 1)
    metrics._add("lifecycle.telemetry.dropped", (("reason", "timeout"),), 2)
    metrics._add("faas.invoke_duration", (), 0.002)
    collected = metrics.collect(now_ns=5)
    assert collected is not None
    (resource_metrics,) = json.loads(encoder.metrics(collected))["resourceMetrics"]
    (scope_metrics,) = resource_metrics["scopeMetrics"]
    by_metric = {m["name"]: m for m in scope_metrics["metrics"]}
    invocations = by_metric["faas.invocations"]
    assert invocations["unit"] == "{invocation}"
    assert invocations["sum"] == {
        "dataPoints": [
            {
                "attributes": [{"key": "faas.trigger", "value": {"stringValue": "http"}}],
                "startTimeUnixNano": "1",
                "timeUnixNano": "5",
                "asInt": "2",
            }
        ],
        "aggregationTemporality": 1,
        "isMonotonic": True,
    }
    (duration,) = by_metric["faas.invoke_duration"]["histogram"]["dataPoints"]
    assert duration["count"] == "1"
    assert duration["sum"] == 0.002
    assert duration["bucketCounts"][:3] == ["0", "1", "0"]
    assert len(duration["bucketCounts"]) == len(duration["explicitBounds"]) + 1
    assert (duration["min"], duration["max"]) == (0.002, 0.002)


class RecordingCollector:
    """OTLP/HTTP on 127.0.0.1 keeping each request (path, headers, body, client port);
    closes the connection after answering request number ``drop_after``, without saying
    so (a collector's idle timeout, or a freeze)."""

    def __init__(self):
        import http.server

        collector = self
        self.requests: list[tuple[str, dict[str, str], bytes, int]] = []
        self.drop_after = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.requests.append(
                    (self.path, dict(self.headers), body, self.client_address[1])
                )
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                if len(collector.requests) == collector.drop_after:
                    self.close_connection = True

            def log_message(self, *args):
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_otlp_http_sends_the_standard_headers_gzip_and_keeps_its_connection():
    import gzip

    from lifecycle_probe.sinks.otel.exporters import OtlpHttpExporter
    from lifecycle_probe.sinks.otel.spans import Span

    collector = RecordingCollector()
    collector.drop_after = 2
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url + "/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20cret,x-team=orders",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-team=traces",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    }
    exporter = OtlpHttpExporter({"service.name": "t"}, ("probe", "1"), environ)
    span = Span("s", 1, 2, None, {"k": "v"}, 1, 2)
    try:
        # WHEN three batches go out, the collector dropping the connection after the second
        exporter.export_spans([span], timeout_s=5.0)
        exporter.export_spans([span], timeout_s=5.0)
        time.sleep(0.1)  # the close reaches the probe's side
        exporter.export_spans([span], timeout_s=5.0)
    finally:
        exporter.shutdown()
        collector.stop()
    # THEN every request reached /v1/traces with the headers, gzipped OTLP JSON
    assert [path for path, _, _, _ in collector.requests] == ["/v1/traces"] * 3
    _, headers, body, _ = collector.requests[0]
    assert headers["api-key"] == "s cret"
    assert headers["x-team"] == "traces"  # the signal's own header wins
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Encoding"] == "gzip"
    assert (
        json.loads(gzip.decompress(body))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"]
        == "s"
    )
    # AND the connection was kept for the second, made anew for the third
    ports = [port for _, _, _, port in collector.requests]
    assert ports[0] == ports[1] != ports[2]


def test_an_unreachable_collector_fails_the_export_within_its_time(tmp_path):
    from lifecycle_probe.sinks.otel.exporters import OtlpHttpExporter
    from lifecycle_probe.sinks.otel.failures import ExportError

    # GIVEN a port nobody listens on, and one that accepts and never answers
    with socket_listening() as (silent_port, _):
        closed_port = free_port()
        for port, kind in ((closed_port, "ConnectionRefusedError"), (silent_port, "Timeout")):
            exporter = OtlpHttpExporter(
                {}, ("probe", "1"), {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
            )
            started = time.monotonic()
            with pytest.raises(ExportError) as failed:
                exporter.export_spans([], timeout_s=0.3)
            # THEN each fails, saying how, within the time it was given
            assert time.monotonic() - started < 1.0
            assert kind in failed.value.kind
            exporter.shutdown()


def free_port():
    import socket

    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


class socket_listening:
    """A listening socket that accepts (by the kernel's backlog) and never answers."""

    def __enter__(self):
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        return self.listener.getsockname()[1], self.listener

    def __exit__(self, *exc):
        self.listener.close()


@pytest.mark.parametrize(
    ("environ", "traces", "metrics"),
    [
        ({}, "http://localhost:4318/v1/traces", "http://localhost:4318/v1/metrics"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/base/"},
            "https://collector:4318/base/v1/traces",
            "https://collector:4318/base/v1/metrics",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://shared:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom",
            },
            "http://traces:9999/custom",  # a signal's own endpoint is used as it is
            "http://shared:4318/v1/metrics",
        ),
    ],
)
def test_otlp_endpoints_follow_the_specification(environ, traces, metrics):
    from lifecycle_probe.sinks.otel.endpoints import endpoint

    assert endpoint("traces", environ).url == traces
    assert endpoint("metrics", environ).url == metrics


def test_otlp_endpoint_settings_and_a_protocol_the_probe_does_not_speak(caplog):
    from lifecycle_probe._safe import forget_warnings
    from lifecycle_probe.sinks.otel.endpoints import endpoint

    forget_warnings()
    environ = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
        "OTEL_EXPORTER_OTLP_HEADERS": "broken,api-key=k",
    }
    with caplog.at_level("WARNING", logger="lifecycle_probe"):
        traces, metrics = endpoint("traces", environ), endpoint("metrics", environ)
    assert (traces.gzip, metrics.gzip) == (False, True)
    assert traces.certificate == metrics.certificate == "/etc/ca.pem"
    assert traces.headers == (("api-key", "k"),)
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'" in m]) == 1
    assert len([m for m in said if "HEADERS entry is not key=value" in m]) == 1
    assert "api-key" not in " ".join(said)
