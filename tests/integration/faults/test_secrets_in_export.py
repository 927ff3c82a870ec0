"""Secrets around the OpenTelemetry export: source lines in stack traces, the collector's
API key in the probe's warnings; and a function's own OpenTelemetry left alone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

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


def test_the_probes_export_imports_no_opentelemetry_and_touches_no_logger_of_it(tmp_path):
    # GIVEN a fresh process whose probe exports otlp (to a collector that answers 500)
    # and otlp-file, with no sampler named
    collector = FaultCollector("status:500").start()
    script = f"""
import logging, sys
from lifecycle_probe import probe
handler = probe(exporter="otlp,otlp-file", otlp_file={str(tmp_path / "x.jsonl")!r},
                flush="sync", flush_timeout_ms=2000)(lambda event, context: "ok")
assert handler({{}}, None) == "ok"
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
touched = sorted(
    name for name, logger in logging.root.manager.loggerDict.items()
    if name.startswith("opentelemetry") and getattr(logger, "filters", None)
)
print(loaded, touched)
"""
    try:
        completed = subprocess.run(
            [sys.executable, "-c", script],
            env={
                **os.environ,
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint("traces").rsplit("/v1", 1)[0],
                "OTEL_TRACES_SAMPLER": "",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        collector.stop()
    # THEN the export went out (and failed: said once) without any OpenTelemetry module,
    # so a function's own OpenTelemetry and its logging are left as they are
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[] []"
    assert completed.stderr.count("export to http://127.0.0.1") == 2  # spans, metrics
    assert "HTTP 500" in completed.stderr
    assert (tmp_path / "x.jsonl").read_text().count("\n") == 2


def test_redaction_and_failure_kinds():
    from lifecycle_probe.sinks.otel.failures import dropped_reason, error_kind, redact_url

    assert (
        redact_url("https://user:pw@collector.example:4318/v1/traces?api_key=K#x")
        == "https://collector.example:4318/v1/traces?<redacted>"
    )
    assert redact_url("http://[::1]:4318/v1/metrics") == "http://[::1]:4318/v1/metrics"
    assert redact_url("http://host:99999/") == "http://<not shown>"
    refused = ConnectionRefusedError(111, "Connection refused to http://h/?api_key=K")
    assert error_kind(refused) == "ConnectionRefusedError (ECONNREFUSED)"
    wrapped = RuntimeError("url /v1/traces?api_key=K")
    wrapped.__cause__ = TimeoutError("read timed out")
    assert error_kind(wrapped) == "RuntimeError/TimeoutError"
    assert dropped_reason(error_kind(wrapped)) == "timeout"
    assert dropped_reason("HTTP 500") == "export_failed"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # no scheme (a common mistake): urlsplit read "user" as the scheme
        ("user:PW@collector:4318/v1/traces", "collector:4318/v1/traces"),
        ("PW@collector:4318", "collector:4318"),
        ("HTTPS://user:PW@Collector:4318/v1?k=PW#PW", "https://collector:4318/v1?<redacted>"),
        ("grpc://user:PW@collector:4317", "grpc://collector:4317"),
        ("http://PW@user@collector", "http://collector"),
        ("http:/user:PW@collector", "<not shown>"),
        # a password holding "/", "?" or "#" ends the authority there: no host is safe
        ("http://user:PW/PW@collector/v1", "http://<not shown>"),
        ("http://user:12?PW@collector", "http://<not shown>"),
        ("http://user:PW#PW@collector", "http://<not shown>"),
        ("http://collector/v1/traces?to=PW@x", "http://<not shown>"),
        ("http://user%3APW%40collector:4318/", "http://<not shown>"),
        ("http://collector:PW/", "http://<not shown>"),
        ("http://[::1:PW/", "http://<not shown>"),
        ("h\ttp://user:PW@collector", "<not shown>"),
        ("http://collector/v1/traces#PW", "http://collector/v1/traces"),
        ("http://collector/a b\r\nforged", "http://collector/a%20b%0D%0Aforged"),
    ],
)
def test_redact_url_never_shows_the_userinfo_query_or_fragment(url, shown):
    from lifecycle_probe.sinks.otel.failures import redact_url

    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("variable", "url", "said"),
    [
        # endpoints the probe cannot use: the exporter is skipped, saying so
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"user:{SECRET}@127.0.0.1:4318",
            "not a valid http(s) URL: 127.0.0.1:4318/v1/traces)",
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", f"{SECRET}@127.0.0.1:4318", "URL: 127.0.0.1:4318/v1"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"grpc://user:{SECRET}@127.0.0.1:4317",
            "URL: grpc://127.0.0.1:4317/v1/traces)",
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", f"http:/user:{SECRET}@127.0.0.1:1", "URL: <not shown>)"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"http://user:{SECRET}/{SECRET}@127.0.0.1:1",
            "URL: http://<not shown>)",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"http://user:{SECRET}?{SECRET}@127.0.0.1:1",
            "URL: http://<not shown>)",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"http://user:{SECRET}#{SECRET}@127.0.0.1:1",
            "URL: http://<not shown>)",
        ),
        # urlsplit's own error quotes the authority, userinfo and all
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"http://user:{SECRET}\u2100@127.0.0.1:1",
            "URL: http://127.0.0.1:1/v1/traces)",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"http://user:{SECRET}@[::1:1",
            "URL: http://<not shown>)",
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{SECRET}", "URL: http://<not shown>)"),
        # endpoints it can use (nothing listens on port 1): the failed export is said
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f" hTTp://user:{SECRET}@127.0.0.1:1/x?key={SECRET}#{SECRET} ",
            "export to http://127.0.0.1:1/x?<redacted> failed",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            f"http://{SECRET}@user@127.0.0.1:1/v1/traces",
            "export to http://127.0.0.1:1/v1/traces failed",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            f"https://user:{SECRET}@127.0.0.1:1/v1/traces",
            "export to https://127.0.0.1:1/v1/traces failed",
        ),
    ],
)
def test_an_endpoints_userinfo_is_never_echoed(tmp_path, variable, url, said):
    # GIVEN a fresh process whose probe exports otlp to an endpoint with a password in a
    # hostile place, and otlp-file (where lifecycle.telemetry.dropped goes)
    otlp_file = tmp_path / "x.jsonl"
    script = f"""
from lifecycle_probe import probe
handler = probe(exporter="otlp,otlp-file", otlp_file={str(otlp_file)!r}, flush="sync",
                flush_timeout_ms=1000)(lambda event, context: "ok")
for _ in range(2):
    assert handler({{}}, None) == "ok"
"""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env={**environ, variable: url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # THEN the probe said what it could of the endpoint, and never the password
    assert completed.returncode == 0, completed.stderr
    assert said in completed.stderr
    shown = completed.stdout + completed.stderr + otlp_file.read_text()
    assert SECRET.lower() not in shown.lower()


def test_one_warning_per_place_with_a_failing_probe_export(caplog):
    # The probe's own exporter, failing three flushes in a row against a collector that
    # answers 500, its API key in the endpoint's query: the probe says it once, without
    # the key
    from lifecycle_probe._safe import forget_warnings
    from lifecycle_probe.sinks.otel.channels import Channel
    from lifecycle_probe.sinks.otel.exporters import OtlpHttpExporter
    from lifecycle_probe.sinks.otel.metrics import Metrics
    from lifecycle_probe.sinks.otel.spans import Span

    forget_warnings()
    collector = FaultCollector("status:500").start()
    environ = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint("traces", "probe-key")}
    exporter = OtlpHttpExporter({"service.name": "t"}, ("t", "1"), environ)
    channel = Channel(exporter, Metrics(start_ns=1))
    span = Span("s", 1, 2, None, {}, 1, 2)
    try:
        with caplog.at_level(logging.WARNING):
            results = []
            for _ in range(3):
                channel.keep([span])
                results.append(channel.export_spans(timeout_s=5.0))
    finally:
        exporter.shutdown()
        collector.stop()
    assert results == [False, False, False]
    messages = [r.getMessage() for r in caplog.records]
    failed = [m for m in messages if "export to" in m]
    assert len(failed) == 1, messages
    assert "HTTP 500" in failed[0]
    assert "/v1/traces?<redacted>" in failed[0]
    assert "probe-key" not in " ".join(messages)
    assert_one_warning_each("\n".join(messages), "probe-key")
    # and the spans refused MAX_ATTEMPTS times were given up, counted
    assert channel.dropped_spans == 3
