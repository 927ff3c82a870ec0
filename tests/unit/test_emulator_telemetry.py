"""The local Lambda's telemetry dispatcher: batches by maxItems and maxBytes, in order,
held while paused (frozen), and a backlog for subscriptions made during INIT."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from lifecycle_probe.emulator.runtime_api import Reply
from lifecycle_probe.emulator.telemetry_api import (
    Buffering,
    Subscription,
    TelemetryDispatcher,
    event_time,
    parse_subscription,
)


class _Recorder(BaseHTTPRequestHandler):
    batches: list[list[dict[str, Any]]]
    arrived: threading.Condition

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.arrived:
            self.batches.append(json.loads(body))
            self.arrived.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[list[dict[str, Any]]], threading.Condition]]:
    batches: list[list[dict[str, Any]]] = []
    arrived = threading.Condition()
    handler = type("Recorder", (_Recorder,), {"batches": batches, "arrived": arrived})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], batches, arrived
    server.shutdown()
    server.server_close()


def subscription(port: int, **buffering: int) -> Subscription:
    return Subscription("127.0.0.1", port, "/", frozenset({"platform"}), Buffering(**buffering))


def wait_for_events(
    batches: list[list[dict[str, Any]]], arrived: threading.Condition, count: int
) -> list[int]:
    with arrived:
        assert arrived.wait_for(lambda: sum(map(len, batches)) >= count, timeout=10)
        return [len(batch) for batch in batches]


def test_batches_hold_at_most_max_items_and_keep_the_order(recorder):
    port, batches, arrived = recorder
    dispatcher = TelemetryDispatcher("env-1", lambda line: None)
    dispatcher.end_init()
    dispatcher.subscribe("ext", subscription(port, max_items=1000, timeout_ms=25))
    dispatcher.pause()
    for n in range(2500):
        dispatcher.publish("platform.start", {"requestId": f"r{n}"}, 0)
    dispatcher.resume()

    sizes = wait_for_events(batches, arrived, 2500)
    dispatcher.close()
    assert sizes == [1000, 1000, 500]
    ids = [event["record"]["requestId"] for batch in batches for event in batch]
    assert ids == [f"r{n}" for n in range(2500)]
    assert batches[0][0] == {
        "time": "1970-01-01T00:00:00.000Z",
        "type": "platform.start",
        "record": {"requestId": "r0"},
    }


def test_batches_hold_at_most_max_bytes(recorder):
    port, batches, arrived = recorder
    dispatcher = TelemetryDispatcher("env-1", lambda line: None)
    dispatcher.end_init()
    dispatcher.subscribe("ext", subscription(port, max_bytes=262_144, timeout_ms=25))
    dispatcher.pause()
    for n in range(600):
        dispatcher.publish("platform.report", {"requestId": f"r{n}", "pad": "x" * 1000}, 0)
    dispatcher.resume()

    wait_for_events(batches, arrived, 600)
    dispatcher.close()
    assert len(batches) == 3
    # The array's brackets and commas aside, each batch's events fit maxBytes.
    assert all(len(json.dumps(batch, separators=(",", ":"))) <= 262_144 + 600 for batch in batches)
    assert all(len(batch) < 262 for batch in batches)


def test_a_subscriber_during_init_gets_the_events_so_far(recorder):
    port, batches, arrived = recorder
    dispatcher = TelemetryDispatcher("env-1", lambda line: None)
    dispatcher.publish("platform.initStart", {"phase": "init"}, 1_700_000_000_123_456_789)
    dispatcher.subscribe("ext", subscription(port, timeout_ms=25))
    dispatcher.publish("platform.initReport", {"phase": "init"})
    dispatcher.end_init()

    wait_for_events(batches, arrived, 2)
    late = TelemetryDispatcher("env-2", lambda line: None)
    late.publish("platform.initStart", {"phase": "init"})
    late.end_init()
    late.subscribe("ext", subscription(port, timeout_ms=25))
    late.publish("platform.start", {"requestId": "r1"})
    wait_for_events(batches, arrived, 3)
    dispatcher.close()
    late.close()
    types = [event["type"] for batch in batches for event in batch]
    assert types == ["platform.initStart", "platform.initReport", "platform.start"]
    assert batches[0][0]["time"] == "2023-11-14T22:13:20.123Z"


def test_an_unreachable_subscriber_loses_its_batch_with_a_log_line():
    lines: list[str] = []
    logged = threading.Event()

    def log(line: str) -> None:
        lines.append(line)
        logged.set()

    dispatcher = TelemetryDispatcher("env-1", log)
    dispatcher.subscribe("ext", subscription(1, timeout_ms=25))
    dispatcher.publish("platform.start", {"requestId": "r1"})
    assert logged.wait(10)
    dispatcher.close()
    assert lines[0].startswith("TELEMETRY 1 events to extension ext dropped: ")
    assert dispatcher.dropped() == {"ext": 1}


def test_event_time_is_iso_8601_with_milliseconds():
    assert event_time(1_700_000_000_999_999_999) == "2023-11-14T22:13:20.999Z"


def test_parse_subscription_accepts_the_documented_request():
    parsed = parse_subscription(
        json.dumps(
            {
                "schemaVersion": "2025-01-29",
                "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:8080/t"},
                "types": ["platform", "function"],
            }
        ).encode()
    )
    assert parsed == Subscription(
        "127.0.0.1", 8080, "/t", frozenset({"platform", "function"}), Buffering(1000, 262_144, 1000)
    )
    refused = parse_subscription(b"not json")
    assert isinstance(refused, Reply)
    assert refused.status == 400
