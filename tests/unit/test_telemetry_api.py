"""The probe's Telemetry API subscriber: parsing, bounds, the listener, the subscription."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from lifecycle_probe import telemetry_api
from lifecycle_probe.telemetry_api import PlatformFigures, TelemetrySubscriber


def report(request_id: str, **metrics: object) -> dict[str, Any]:
    base = {"durationMs": 12.5, "billedDurationMs": 13, "memorySizeMB": 128, "maxMemoryUsedMB": 70}
    return {
        "time": "2026-11-30T17:00:00.000Z",
        "type": "platform.report",
        "record": {"requestId": request_id, "status": "success", "metrics": {**base, **metrics}},
    }


def phase_report(kind: str, duration_ms: float) -> dict[str, Any]:
    return {
        "time": "2026-11-30T17:00:00.000Z",
        "type": f"platform.{kind}Report",
        "record": {"status": "success", "metrics": {"durationMs": duration_ms}},
    }


def test_a_report_becomes_figures_for_its_request():
    subscriber = TelemetrySubscriber()
    subscriber.receive([report("r1", initDurationMs=250.25)])

    assert subscriber.figures_for("r1") == PlatformFigures(
        "r1",
        duration_ms=12.5,
        billed_duration_ms=13,
        max_memory_used_mb=70,
        init_duration_ms=250.25,
    )
    assert subscriber.figures_for("r2") is None


def test_init_and_restore_reports_go_to_the_next_request_only():
    subscriber = TelemetrySubscriber()
    subscriber.receive(
        [phase_report("init", 900.0), phase_report("restore", 120.5), report("r1"), report("r2")]
    )

    first, second = subscriber.figures_for("r1"), subscriber.figures_for("r2")
    assert first is not None
    assert second is not None
    assert (first.init_duration_ms, first.restore_duration_ms) == (900.0, 120.5)
    assert (second.init_duration_ms, second.restore_duration_ms) == (None, None)


def test_the_reports_own_init_figure_wins():
    subscriber = TelemetrySubscriber()
    subscriber.receive([phase_report("init", 900.0), report("r1", initDurationMs=901.0)])
    figures = subscriber.figures_for("r1")
    assert figures is not None
    assert figures.init_duration_ms == 901.0


@pytest.mark.parametrize(
    "events",
    [
        None,
        "not a list",
        {"type": "platform.report"},
        [None, 3, "x", {"type": "platform.report"}, {"type": "platform.report", "record": []}],
        [{"type": "platform.report", "record": {"requestId": "r1"}}],
        [{"type": "platform.report", "record": {"requestId": 5, "metrics": {}}}],
        [{"type": "platform.report", "record": {"requestId": "x" * 129, "metrics": {}}}],
        [{"type": "platform.report", "record": {"requestId": "", "metrics": {}}}],
    ],
)
def test_malformed_input_is_ignored(events):
    subscriber = TelemetrySubscriber()
    subscriber.receive(events)
    assert subscriber.take_pending() == ()


def test_implausible_figures_are_dropped_not_trusted():
    subscriber = TelemetrySubscriber()
    subscriber.receive(
        [report("r1", durationMs=True, billedDurationMs=-1, maxMemoryUsedMB=float("nan"))]
    )
    figures = subscriber.figures_for("r1")
    assert figures is not None
    assert (figures.duration_ms, figures.billed_duration_ms, figures.max_memory_used_mb) == (
        None,
        None,
        None,
    )


def test_the_store_and_the_pending_queue_are_bounded():
    subscriber = TelemetrySubscriber(limit=3)
    subscriber.receive([report(f"r{n}") for n in range(5)])

    assert [subscriber.figures_for(f"r{n}") is not None for n in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert [f.request_id for f in subscriber.take_pending()] == ["r2", "r3", "r4"]
    assert subscriber.take_pending() == ()


def test_figures_are_immutable():
    figures = PlatformFigures("r1", duration_ms=1.0)
    with pytest.raises(AttributeError):
        figures.duration_ms = 2.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del figures.request_id
    assert not hasattr(figures, "__dict__")
    assert figures.as_dict()["duration_ms"] == 1.0
    assert "duration_ms=1.0" in repr(figures)


def test_wait_for_returns_when_the_report_arrives():
    subscriber = TelemetrySubscriber()
    arrived = threading.Event()

    def deliver() -> None:
        arrived.wait(5)
        subscriber.receive([report("late")])

    thread = threading.Thread(target=deliver)
    thread.start()
    assert subscriber.wait_for("late", 0) is None
    arrived.set()
    figures = subscriber.wait_for("late", 5)
    thread.join()
    assert figures is not None
    assert figures.request_id == "late"


def test_the_listener_takes_batches_over_one_kept_alive_connection():
    subscriber = TelemetrySubscriber()
    host, port = subscriber.listen("127.0.0.1")
    try:
        connection = http.client.HTTPConnection(host, port, timeout=5)
        for batch in ([report("r1")], [report("r2"), {"type": "platform.start", "record": {}}]):
            connection.request("POST", "/", json.dumps(batch), {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"")
        connection.request("POST", "/", b"not json", {"Connection": "close"})
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        subscriber.close()
    assert [f.request_id for f in subscriber.take_pending()] == ["r1", "r2"]


def test_outside_lambda_nothing_is_started(monkeypatch):
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    threads = threading.active_count()
    assert telemetry_api.start("extension-id") is None
    assert telemetry_api.start(None, "127.0.0.1:9001") is None
    assert threading.active_count() == threads


def test_sandbox_address_comes_from_the_hosts_file(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        "# 10.0.0.1 sandbox.localdomain\n"
        "169.254.100.1 sandbox.localdomain sandbox\n"
    )
    assert telemetry_api.sandbox_address(str(hosts)) == "169.254.100.1"
    hosts.write_text("127.0.0.1 localhost\n::1 sandbox.localdomain\n")
    assert telemetry_api.sandbox_address(str(hosts)) is None
    assert telemetry_api.sandbox_address(str(tmp_path / "missing")) is None


class _RuntimeApi(BaseHTTPRequestHandler):
    status = 200
    seen: ClassVar[list[tuple[str, dict[str, str], dict[str, Any]]]] = []

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, dict(self.headers), body))
        self.send_response(self.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def runtime_api():
    _RuntimeApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RuntimeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_start_subscribes_to_platform_events_with_the_smallest_buffer(runtime_api):
    address = f"127.0.0.1:{runtime_api.server_address[1]}"
    subscriber = telemetry_api.start("ext-1", address)
    assert subscriber is not None
    try:
        [(path, headers, body)] = _RuntimeApi.seen
        assert path == "/2022-07-01/telemetry"
        assert headers["Lambda-Extension-Identifier"] == "ext-1"
        assert subscriber.address is not None
        assert body == {
            "schemaVersion": "2022-12-13",
            "destination": {
                "protocol": "HTTP",
                "URI": f"http://sandbox.localdomain:{subscriber.address[1]}/",
            },
            "types": ["platform"],
            "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
        }
    finally:
        subscriber.close()


def test_a_refused_subscription_gives_none_and_closes_the_listener(runtime_api, monkeypatch):
    monkeypatch.setattr(_RuntimeApi, "status", 403)
    address = f"127.0.0.1:{runtime_api.server_address[1]}"
    closed: list[TelemetrySubscriber] = []
    original_close = TelemetrySubscriber.close

    def close(self: TelemetrySubscriber) -> None:
        closed.append(self)
        original_close(self)

    monkeypatch.setattr(TelemetrySubscriber, "close", close)
    assert telemetry_api.start("ext-1", address) is None
    [subscriber] = closed
    assert subscriber.address is not None
    # Nothing listens there any more.
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(*subscriber.address, timeout=1).request("POST", "/", b"[]")


def test_an_unreachable_runtime_api_gives_none():
    assert telemetry_api.start("ext-1", "127.0.0.1:1") is None


def test_the_figures_are_the_models_record():
    # Sinks read the figures from the model, never from this capture module.
    from lifecycle_probe import records

    assert PlatformFigures is records.PlatformFigures
    figures = PlatformFigures("r1", billed_duration_ms=13)
    assert figures.replace(max_memory_used_mb=70).as_dict() == {
        "request_id": "r1",
        "duration_ms": None,
        "billed_duration_ms": 13,
        "max_memory_used_mb": 70,
        "init_duration_ms": None,
        "restore_duration_ms": None,
    }


def test_one_thread_serves_a_connection_per_batch():
    # GIVEN the listener, and a sender that opens a connection per batch (as the local
    # Lambda does), one of them left open and idle in between
    before = {t.ident for t in threading.enumerate()}
    subscriber = TelemetrySubscriber()
    host, port = subscriber.listen("127.0.0.1")
    try:
        idle = http.client.HTTPConnection(host, port, timeout=5)
        idle.request("POST", "/", json.dumps([report("r0")]))
        assert idle.getresponse().read() == b""
        for n in range(1, 6):
            connection = http.client.HTTPConnection(host, port, timeout=5)
            connection.request("POST", "/", json.dumps([report(f"r{n}")]))
            assert connection.getresponse().status == 200
            connection.close()
        # THEN every batch is taken, by the listener's one thread: none per connection.
        # (Only the threads that run this subscriber's code are counted: a thread another
        # test's sink starts or ends meanwhile is none of its business.)
        started = [
            t.name
            for t in threading.enumerate()
            if t.ident not in before
            and getattr(getattr(t, "_target", None), "__self__", None) is subscriber
        ]
        assert started == ["lifecycle-probe-telemetry"]
        idle.close()
    finally:
        subscriber.close()
    assert [f.request_id for f in subscriber.take_pending()] == [f"r{n}" for n in range(6)]
