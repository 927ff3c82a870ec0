"""A collector that accepts and never answers: the backoff (channels.Backoff) keeps it from
costing every flush its timeout, and what waited is delivered once it answers again.

Real sockets on 127.0.0.1 (tests/integration/faults/servers.py), the probe's own OTLP/HTTP
exporter, sync flushing (no extension: outside Lambda) and the after-response drain the
internal extension runs.
"""

from __future__ import annotations

import time

import pytest

from lifecycle_probe import probe
from lifecycle_probe.config import Config
from lifecycle_probe.sinks import add_process_sink, remove_process_sink
from lifecycle_probe.sinks.otel import OtelSink
from lifecycle_probe.sinks.otel.channels import MAX_ATTEMPTS, Channel
from lifecycle_probe.testing import fresh_environment
from tests.functional.test_otel_export import LAMBDA_ENV, context
from tests.integration.faults.servers import FaultCollector

FLUSH_TIMEOUT_MS = 300
# What a flush that skips a resting destination may cost, on a busy 2-core host.
SMALL_S = 0.5


@pytest.fixture
def hanging_collector(monkeypatch):
    """A collector that reads each request and never answers, named by the standard
    variables; a Lambda-like environment with no trace context."""
    for key, value in LAMBDA_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("_X_AMZN_TRACE_ID", "OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    collector = FaultCollector(mode="hang").start()
    for key, value in collector.env().items():
        monkeypatch.setenv(key, value)
    fresh_environment(environ=LAMBDA_ENV, init_duration_s=0.2)
    yield collector
    collector.stop()


@pytest.fixture
def otlp_sink():
    """An OtelSink exporting over OTLP/HTTP on its own thread, as in production."""
    sinks = []

    def build():
        sink = OtelSink(Config.resolve({}, flush="sync", flush_timeout_ms=FLUSH_TIMEOUT_MS))
        add_process_sink(sink)
        sinks.append(sink)
        return sink

    yield build
    for sink in sinks:
        remove_process_sink(sink)
        sink.shutdown(timeout_s=1.0)


def the_channel(sink: OtelSink) -> Channel:
    assert sink._pipeline is not None
    (channel,) = sink._pipeline._channels
    return channel


def handler():
    return probe(exporter="none")(lambda event, ctx: "ok")


def test_sync_calls_pay_one_timeout_per_interval_not_one_each(
    hanging_collector, otlp_sink, monkeypatch
):
    # GIVEN an interval longer than the test, so that the count does not hang on its speed
    monkeypatch.setattr("lifecycle_probe.sinks.otel.channels.BACKOFF_FIRST_S", 60.0)
    otlp_sink()
    function = handler()
    # WHEN 10 invocations flush before returning to a collector that never answers
    started = time.monotonic()
    for n in range(10):
        assert function({}, context(f"r{n}")) == "ok"
    elapsed = time.monotonic() - started
    # THEN together they cost one flush timeout, not ten (3 s)
    assert elapsed < FLUSH_TIMEOUT_MS / 1000 + SMALL_S
    # AND the collector was sent one request: the first flush's spans (the metrics of
    # that flush were skipped after the spans timed out)
    assert hanging_collector.requests == 1


def test_after_response_drains_rest_the_destination_too(hanging_collector, otlp_sink, monkeypatch):
    monkeypatch.setattr("lifecycle_probe.sinks.otel.channels.BACKOFF_FIRST_S", 60.0)
    sink = otlp_sink()

    class Registered:  # an internal extension that drains after each response
        registered = True

    sink.extension = Registered()
    function = handler()
    # WHEN the extension drains after each of 10 responses (environment billed meanwhile)
    held = 0.0
    for n in range(10):
        assert function({}, context(f"r{n}")) == "ok"
        started = time.monotonic()
        assert not sink.drain(FLUSH_TIMEOUT_MS / 1000)
        held += time.monotonic() - started
    # THEN the environment was held for one flush timeout in all
    assert held < FLUSH_TIMEOUT_MS / 1000 + SMALL_S
    assert hanging_collector.requests == 1


def test_what_waited_is_delivered_when_the_collector_answers_again(
    hanging_collector, otlp_sink, monkeypatch
):
    # GIVEN the first interval (1 s): the calls below skip the collector in far less
    monkeypatch.setattr("lifecycle_probe.sinks.otel.channels.BACKOFF_FIRST_S", 1.0)
    sink = otlp_sink()
    function = handler()
    ids = [f"r{n}" for n in range(MAX_ATTEMPTS + 3)]
    for request_id in ids[:-1]:
        function({}, context(request_id))
    channel = the_channel(sink)
    assert channel.backoff.timeouts >= 1
    assert channel.backoff.resting()
    # WHEN the collector answers again and the interval has passed (waited for exactly:
    # the interval is the earliest the next attempt may come)
    hanging_collector.mode = "ok"
    time.sleep(max(0.0, channel.backoff.retry_at - time.monotonic()) + 0.05)
    function({}, context(ids[-1]))
    # THEN every invocation held is delivered, spans and metric points, none dropped
    # (skipped flushes are not refusals: MAX_ATTEMPTS was not used up)
    assert hanging_collector.invocation_ids() >= set(ids)
    assert hanging_collector.total("faas.invocations") == len(ids)
    assert hanging_collector.total("lifecycle.telemetry.dropped") == 0
    # AND the backoff is reset: the next flush tries at once
    assert channel.backoff.interval_s == 0
    assert not channel.backoff.resting()


def test_the_interval_doubles_up_to_its_bound_and_resets_on_an_answer():
    from lifecycle_probe.sinks.otel.channels import Backoff

    now = [100.0]
    backoff = Backoff(clock=lambda: now[0])
    assert not backoff.resting()
    intervals = []
    for _ in range(9):
        backoff.timed_out()
        intervals.append(backoff.interval_s)
    assert intervals == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.resting()
    now[0] += 59.9
    assert backoff.resting()
    now[0] += 0.2  # e.g. frozen meanwhile: the interval counts wall time
    assert not backoff.resting()
    backoff.answered()
    backoff.timed_out()
    assert backoff.interval_s == 1


class ExporterPastItsBound:
    """An SDK span exporter that blocks until released, whatever time it was given: as the
    probe's own exporter does in a DNS lookup that hangs (getaddrinfo takes no timeout)."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.calls = 0

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.calls += 1
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_sync_callers_stop_waiting_for_an_export_stuck_past_its_bound(monkeypatch):
    for key, value in LAMBDA_ENV.items():
        monkeypatch.setenv(key, value)
    fresh_environment(environ=LAMBDA_ENV, init_duration_s=0.2)
    exporter = ExporterPastItsBound()
    sink = OtelSink(
        Config.resolve({}, flush="sync", flush_timeout_ms=FLUSH_TIMEOUT_MS),
        (),
        span_exporter=exporter,  # type: ignore[arg-type]
        isolate_exports=True,
    )
    add_process_sink(sink)
    try:
        function = handler()
        # WHEN 10 invocations flush while the first export is stuck past its deadline
        started = time.monotonic()
        for n in range(10):
            assert function({}, context(f"r{n}")) == "ok"
        elapsed = time.monotonic() - started
        # THEN the first caller waits its bound, the next one too (the drain was only just
        # over its deadline), and the rest not at all: not ten bounds (3 s)
        assert elapsed < 2 * FLUSH_TIMEOUT_MS / 1000 + SMALL_S
        # AND nothing is lost: once the export returns, the next drain takes every record
        exporter.release.set()
        assert sink.drain(5.0)
    finally:
        remove_process_sink(sink)
        exporter.release.set()
        sink.shutdown(timeout_s=5.0)
    assert exporter.calls == 2
