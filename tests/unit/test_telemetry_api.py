"""The probe's Telemetry API subscriber: parsing, bounds, the listener, the subscription."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from lifecycle_probe import telemetry_api
from lifecycle_probe.rare_records import PlatformFigures
from lifecycle_probe.telemetry_api import TelemetrySubscriber


def report(request_id: str, **metrics: object) -> dict[str, Any]:
    base = {"durationMs": 12.5, "billedDurationMs": 13, "memorySizeMB": 128, "maxMemoryUsedMB": 70}
    return {
        "time": "2026-11-30T17:00:00.000Z",
        "type": "platform.report",
        "record": {"requestId": request_id, "status": "success", "metrics": {**base, **metrics}},
    }


def phase_report(
    kind: str, duration_ms: float, status: str = "success", phase: str = "init"
) -> dict[str, Any]:
    record: dict[str, Any] = {"status": status, "metrics": {"durationMs": duration_ms}}
    if kind == "init":  # only the INIT report has a phase (AWS's schema)
        record |= {"initializationType": "on-demand", "phase": phase}
    return {"time": "2026-11-30T17:00:00.000Z", "type": f"platform.{kind}Report", "record": record}


def start_event(request_id: str) -> dict[str, Any]:
    return {
        "time": "2026-11-30T17:00:00.000Z",
        "type": "platform.start",
        "record": {"requestId": request_id},
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
        [
            report("r1", durationMs=True, billedDurationMs=-1, maxMemoryUsedMB=float("nan")),
            report("r2", durationMs=True, billedDurationMs=5),
        ]
    )
    # A report with no usable figure is no report; the others keep what is usable.
    assert subscriber.figures_for("r1") is None
    figures = subscriber.figures_for("r2")
    assert figures is not None
    assert (figures.duration_ms, figures.billed_duration_ms, figures.max_memory_used_mb) == (
        None,
        5,
        70,
    )
    assert [f.request_id for f in subscriber.take_pending()] == ["r2"]


def test_figures_beyond_what_lambda_can_report_are_ignored_and_the_batch_goes_on():
    subscriber = TelemetrySubscriber()
    subscriber.receive(
        [
            report("before", billedDurationMs=5),
            # float() of this int overflows: it must cost this figure, not the batch.
            report("huge", billedDurationMs=10**400, durationMs=1e300, maxMemoryUsedMB=2**70),
            report(
                "edge",
                durationMs=telemetry_api.MAX_DURATION_MS,
                billedDurationMs=telemetry_api.MAX_DURATION_MS + 1,
                maxMemoryUsedMB=telemetry_api.MAX_MEMORY_MB,
                initDurationMs=1e300,
            ),
            report("over", durationMs=None, billedDurationMs=None, maxMemoryUsedMB=10_241),
            report("after", billedDurationMs=7),
        ]
    )
    taken = {f.request_id: f for f in subscriber.take_pending()}
    assert list(taken) == ["before", "edge", "after"]
    assert (taken["before"].billed_duration_ms, taken["after"].billed_duration_ms) == (5, 7)
    assert taken["edge"].as_dict() == {
        "request_id": "edge",
        "duration_ms": 1_500_000.0,
        "billed_duration_ms": None,
        "max_memory_used_mb": 10_240,
        "init_duration_ms": None,
        "restore_duration_ms": None,
    }


def test_a_repeated_report_reaches_exactly_one_export():
    subscriber = TelemetrySubscriber()
    # Repeated while pending: one entry, the newest figures, in the first one's place.
    subscriber.receive([report("r1", billedDurationMs=1), report("r2")])
    subscriber.receive([report("r1", billedDurationMs=2, initDurationMs=None)])
    taken = subscriber.take_pending()
    assert [(f.request_id, f.billed_duration_ms) for f in taken] == [("r1", 2), ("r2", 13)]
    # Repeated once handed over: ignored.
    subscriber.receive([report("r1", billedDurationMs=3), report("r3")])
    assert [f.request_id for f in subscriber.take_pending()] == ["r3"]
    figures = subscriber.figures_for("r1")
    assert figures is not None
    assert figures.billed_duration_ms == 2


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
    assert subscriber.evicted == 2  # the reports nothing took were counted, not lost silently


def test_evicted_reports_are_counted_with_one_warning(caplog):
    from lifecycle_probe import _safe

    _safe._warned.discard("telemetry:evicted")
    subscriber = TelemetrySubscriber(limit=2)
    with caplog.at_level("WARNING"):
        subscriber.receive([report(f"r{n}") for n in range(3)])
        subscriber.receive([report(f"s{n}") for n in range(3)])
    assert subscriber.evicted == 4
    warnings = [r.getMessage() for r in caplog.records if "waited for an export" in r.getMessage()]
    assert warnings == [
        "lifecycle_probe: more than 2 of Lambda's reports waited for an export; the oldest "
        "are dropped and counted (this warning is shown once)"
    ]


def test_each_evicted_report_is_handed_to_one_export_only():
    # GIVEN a store of 2 that received 5 reports, with no export in between
    subscriber = TelemetrySubscriber(limit=2)
    subscriber.receive([report(f"r{n}") for n in range(5)])
    # WHEN exports take the count of reports given up
    # THEN the first takes the 3 evicted, the next none: never counted twice
    assert subscriber.take_evicted() == 3
    assert subscriber.take_evicted() == 0
    # AND evictions after that are counted anew, for the export after them only
    subscriber.receive([report(f"s{n}") for n in range(2)])
    assert [f.request_id for f in subscriber.take_pending()] == ["s0", "s1"]
    assert (subscriber.take_evicted(), subscriber.evicted) == (2, 5)
    assert subscriber.take_evicted() == 0


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
        assert connection.getresponse().status == 400
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
    from lifecycle_probe import rare_records, telemetry_api

    assert PlatformFigures is rare_records.PlatformFigures
    assert not hasattr(telemetry_api, "PlatformFigures")
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
    # (The threads themselves, not their idents: a thread of another test ending meanwhile
    # may hand its ident on to this one's.)
    before = set(threading.enumerate())
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
            if t not in before
            and getattr(getattr(t, "_target", None), "__self__", None) is subscriber
        ]
        assert started == ["lifecycle-probe-telemetry"]
        idle.close()
    finally:
        subscriber.close()
    assert [f.request_id for f in subscriber.take_pending()] == [f"r{n}" for n in range(6)]


def test_an_init_report_goes_to_the_first_request_after_its_init_only():
    # A successful INIT's report, then the first request: attached, and comparable.
    subscriber = TelemetrySubscriber()
    subscriber.receive([phase_report("init", 900.0), start_event("r1")])
    # An INIT report arriving once a request has started is no start's INIT.
    subscriber.receive([phase_report("init", 99_999.0), report("r1"), report("r2")])
    first, second = subscriber.figures_for("r1"), subscriber.figures_for("r2")
    assert first is not None
    assert second is not None
    assert (first.init_duration_ms, second.init_duration_ms) == (900.0, None)
    assert (subscriber.init_comparable("r1"), subscriber.init_comparable("r2")) == (True, False)


@pytest.mark.parametrize(
    ("status", "phase"), [("error", "init"), ("timeout", "init"), ("success", "invoke")]
)
def test_an_unsuccessful_or_invoke_phase_init_is_neither_attached_nor_compared(status, phase):
    subscriber = TelemetrySubscriber()
    subscriber.receive(
        [
            phase_report("init", 900.0, status=status, phase=phase),
            report("r1", initDurationMs=950.0),
        ]
    )
    figures = subscriber.figures_for("r1")
    assert figures is not None
    # Lambda's own figure on the report is kept, but it measures no start the probe saw.
    assert figures.init_duration_ms == 950.0
    assert subscriber.init_comparable("r1") is False
    subscriber.receive([phase_report("init", 900.0, status=status, phase=phase), report("r2")])
    second = subscriber.figures_for("r2")
    assert second is not None
    assert second.init_duration_ms is None


def test_a_restore_begins_a_new_first_request():
    subscriber = TelemetrySubscriber()
    subscriber.receive([phase_report("init", 900.0), start_event("before-snapshot")])
    subscriber.receive([phase_report("restore", 120.5), report("r1"), report("r2")])
    first, second = subscriber.figures_for("r1"), subscriber.figures_for("r2")
    assert first is not None
    assert second is not None
    assert (first.restore_duration_ms, second.restore_duration_ms) == (120.5, None)
    assert subscriber.init_comparable("r1") is True


def _raw_exchange(port: int, request: bytes, timeout_s: float = 5.0) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        connection.sendall(request)
        return connection.recv(200)


def test_json_nested_past_the_recursion_limit_gets_400_and_the_listener_carries_on():
    subscriber = TelemetrySubscriber()
    _, port = subscriber.listen("127.0.0.1")
    try:
        deep = b"[" * 100_000 + b"]" * 100_000
        head = b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
        assert _raw_exchange(port, head % len(deep) + deep).startswith(b"HTTP/1.1 400 ")
        batch = json.dumps([report("r1")]).encode()
        assert _raw_exchange(port, head % len(batch) + batch).startswith(b"HTTP/1.1 200 ")
    finally:
        subscriber.close()
    assert [f.request_id for f in subscriber.take_pending()] == ["r1"]


def test_a_slow_sender_holds_the_listener_no_longer_than_the_connection_deadline():
    import socket
    import time

    subscriber = TelemetrySubscriber()
    _, port = subscriber.listen("127.0.0.1")
    stop = threading.Event()

    def drip() -> None:
        # A byte every 0.1 s: never idle for 0.25 s, never done.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")
            while not stop.wait(0.1):
                try:
                    slow.sendall(b" ")
                except OSError:
                    return

    dripper = threading.Thread(target=drip)
    dripper.start()
    try:
        time.sleep(0.2)  # the slow connection is being served
        began = time.monotonic()
        batch = json.dumps([report("r1")]).encode()
        reply = _raw_exchange(
            port, b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(batch) + batch
        )
        waited = time.monotonic() - began
    finally:
        stop.set()
        dripper.join()
        subscriber.close()
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert waited < telemetry_api._CONNECTION_S + 0.5
    assert [f.request_id for f in subscriber.take_pending()] == ["r1"]
