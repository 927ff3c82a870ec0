"""Secrets around the OpenTelemetry export: source lines in stack traces, the collector's
API key in the SDK's log lines; and a user's own OpenTelemetry logging left alone."""

from __future__ import annotations

import logging
import threading

import pytest

from tests.integration.faults.accounting import assert_one_warning_each
from tests.integration.faults.servers import FaultCollector
from tests.integration.probe.otlp import read_otlp

SECRET = "s3cr3t-pw-9931"


@pytest.mark.integration
def test_the_exception_event_carries_no_source_line(local_lambda, fault_handlers, tmp_path):
    # GIVEN a handler that fails in a call written with its DSN (and password) inline
    path = tmp_path / "otlp.jsonl"
    env = {"LIFECYCLE_PROBE_EXPORTER": "otlp-file", "LIFECYCLE_PROBE_OTLP_FILE": str(path)}
    emulator = local_lambda("secret_dsn.handler", fault_handlers, env=env)
    result = emulator.invoke({})
    assert result.error_type == "ConnectionError"
    emulator.close()
    spans, _ = read_otlp(path)
    (span,) = [s for s in spans if s["kind"] == 2]
    (event,) = span["events"]
    attributes = {a["key"]: a["value"].get("stringValue") for a in event["attributes"]}
    stack = attributes["exception.stacktrace"]
    # THEN the stack keeps file, line and function of each frame, and no source line
    assert 'secret_dsn.py", line 12, in handler' in stack
    assert 'secret_dsn.py", line 7, in connect' in stack
    assert stack.endswith("builtins.ConnectionError")
    assert "postgresql://" not in stack
    assert SECRET not in path.read_text()


def test_the_probes_export_failures_leave_a_users_own_exporter_logging_alone(caplog):
    # GIVEN the probe's pipeline (which quiets the SDK's exporter loggers for its own
    # threads) and a user's own OTLP exporter pointed at a collector that answers 500
    from opentelemetry.exporter.otlp.json.http import OTLPSpanExporter

    from lifecycle_probe.sinks.otel.failures import quiet_sdk_loggers

    collector = FaultCollector("status:500").start()
    try:
        quiet_sdk_loggers()
        exporter = OTLPSpanExporter(endpoint=collector.endpoint("traces", "user-key"), timeout=1)
        # WHEN the user's exporter fails on a thread of the user's
        with caplog.at_level(logging.WARNING):
            worker = threading.Thread(target=exporter.export, args=([],))
            worker.start()
            worker.join(10)
    finally:
        collector.stop()
    # THEN its own lines are there, as the user configured them
    assert any("Failed to export" in r.getMessage() for r in caplog.records)


def test_redaction_and_failure_kinds():
    from lifecycle_probe.sinks.otel.failures import dropped_reason, error_kind, redact_url

    assert (
        redact_url("https://user:pw@collector.example:4318/v1/traces?api_key=K#x")
        == "https://collector.example:4318/v1/traces?<redacted>"
    )
    assert redact_url("http://[::1]:4318/v1/metrics") == "http://[::1]:4318/v1/metrics"
    assert redact_url("http://host:99999/") == "<an invalid URL>"
    refused = ConnectionRefusedError(111, "Connection refused to http://h/?api_key=K")
    assert error_kind(refused) == "ConnectionRefusedError (ECONNREFUSED)"
    wrapped = RuntimeError("url /v1/traces?api_key=K")
    wrapped.__cause__ = TimeoutError("read timed out")
    assert error_kind(wrapped) == "RuntimeError/TimeoutError"
    assert dropped_reason(error_kind(wrapped)) == "timeout"
    assert dropped_reason("HTTP 500") == "export_failed"


def test_one_warning_per_place_with_a_failing_probe_export(caplog):
    # The probe's own exporter, exporting from a probe thread: the SDK's lines vanish,
    # the probe's warning says it once
    from opentelemetry.exporter.otlp.json.http import OTLPSpanExporter
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext

    from lifecycle_probe._safe import forget_warnings
    from lifecycle_probe.environment import mark_probe_thread, probe_threads
    from lifecycle_probe.sinks.otel.failures import quiet_sdk_loggers
    from lifecycle_probe.sinks.otel.pipeline import _Channel

    forget_warnings()
    quiet_sdk_loggers()
    collector = FaultCollector("status:500").start()
    exporter = OTLPSpanExporter(endpoint=collector.endpoint("traces", "probe-key"), timeout=1)
    channel = _Channel(exporter, None, None)  # type: ignore[arg-type]  # spans only
    span = ReadableSpan("s", context=SpanContext(1, 2, False))

    def export_three_times():
        mark_probe_thread()
        try:
            for _ in range(3):
                channel.keep([span])
                channel.export_spans()
        finally:
            probe_threads.discard(threading.get_ident())

    try:
        with caplog.at_level(logging.WARNING):
            worker = threading.Thread(target=export_three_times)
            worker.start()
            worker.join(20)
    finally:
        collector.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Failed to export" in m]
    failed = [m for m in messages if "export to" in m]
    assert len(failed) == 1, messages
    assert "HTTP 500" in failed[0]
    assert "probe-key" not in " ".join(messages)
    assert_one_warning_each("\n".join(messages), "probe-key")
