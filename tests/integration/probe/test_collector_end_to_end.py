"""End to end: the probe's ``otlp`` export received by a real collector, rotel-agent."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


def rotel_agent() -> Path:
    import rotel

    return Path(rotel.__file__).resolve().parent / "rotel-agent"


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def collector(tmp_path):
    """rotel-agent receiving OTLP/HTTP on 127.0.0.1, printing what it receives."""
    http_port, grpc_port = free_port(), free_port()
    output = tmp_path / "rotel.out"
    with output.open("w") as out:
        process = subprocess.Popen(
            [
                str(rotel_agent()),
                "start",
                "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
                "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
                "--exporter", "blackhole",
                "--debug-log", "traces",
                "--debug-log", "metrics",
                "--debug-log-verbosity", "detailed",
                "--pid-file", str(tmp_path / "rotel.pid"),
                "--log-file", str(tmp_path / "rotel.log"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def listening() -> bool:
            with socket.socket() as check:
                return check.connect_ex(("127.0.0.1", http_port)) == 0

        wait_for(listening, 20, "rotel-agent to listen")
        yield f"http://127.0.0.1:{http_port}", output
    finally:
        process.kill()
        process.wait(timeout=10)


def test_collector_receives_spans_and_metrics(local_lambda, probe_handlers, collector):
    # GIVEN a function exporting OTLP/HTTP to a real collector, flushing after the response
    endpoint, received = collector
    emulator = local_lambda(
        "traced.handler",
        probe_handlers,
        env={
            "LIFECYCLE_PROBE_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "orders-e2e",
        },
    )
    # WHEN it is invoked twice
    first, second = emulator.invoke({}), emulator.invoke({})
    emulator.close()
    assert (first.outcome, second.outcome) == ("ok", "ok")

    # THEN the collector has both invocation spans, the INIT span and the metrics
    def complete() -> bool:
        text = received.read_text()
        return text.count("Name           : lifecycle-demo") >= 2 and "faas.invocations" in text

    wait_for(complete, 20, "the collector to print the probe's telemetry")
    text = received.read_text()
    assert text.count("Name           : lambda.init") == 1
    assert "-> service.name: Str(orders-e2e)" in text
    assert f"-> faas.invocation_id: Str({first.request_id})" in text
    assert f"-> faas.invocation_id: Str({second.request_id})" in text
    assert "-> lifecycle.start: Str(cold)" in text
    assert "-> lifecycle.start: Str(warm)" in text
    assert "-> code.namespace: Str(slow_dependency)" in text
    assert "faas.coldstarts" in text
    assert os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") != endpoint  # nothing leaked here
