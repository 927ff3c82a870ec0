"""The local Lambda's Telemetry API: documented platform events with the REPORT figures.

A plain subscriber (``emu_telemetry``: an internal extension and the standard library's
HTTP server, in the runtime process under ``awslambdaric``) receives what the local
Lambda sends; the tests hold each event against the environment's ground truth and its
REPORT line. An invocation's ``platform.report`` goes out once it is over, so it is
looked for in the next invocation (the environment is frozen in between).
"""

from __future__ import annotations

import calendar
import http.client
import json
import math
import re
import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
REPORT_LINE = re.compile(
    r"REPORT RequestId: (?P<id>\S+)\tDuration: (?P<duration>[\d.]+) ms\t"
    r"Billed Duration: (?P<billed>\d+) ms\tMemory Size: (?P<size>\d+) MB\t"
    r"Max Memory Used: (?P<used>\d+) MB(?P<rest>.*)$",
    re.MULTILINE,
)


def report_line(logs: str, request_id: str) -> re.Match[str]:
    [line] = [m for m in REPORT_LINE.finditer(logs) if m["id"] == request_id]
    return line


def events_of(
    received: list[dict[str, Any]], event_type: str, request_id: str | None = None
) -> list[dict[str, Any]]:
    return [
        event["record"]
        for event in received
        if event["type"] == event_type
        and (request_id is None or event["record"].get("requestId") == request_id)
    ]


def event_ms(event: dict[str, Any]) -> int:
    """An event's ``time`` as milliseconds since the epoch."""
    seconds = calendar.timegm(time.strptime(event["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1000 + int(event["time"][20:23])


def test_platform_events_carry_the_report_figures(local_lambda, handlers_dir):
    emulator = local_lambda("emu_telemetry.handler", handlers_dir, memory_mb=256)

    first = emulator.invoke({"wait_for": [["platform.initReport", None], ["platform.start", None]]})
    second = emulator.invoke({"wait_for": [["platform.report", first.request_id]]})

    assert first.response["subscription"]["status"] == 200
    assert second.response["complete"] is True
    received = second.response["received"]
    assert [event["type"] for event in received[:7]] == [
        "platform.initStart",
        "platform.telemetrySubscription",
        "platform.initRuntimeDone",
        "platform.initReport",
        "platform.start",
        "platform.runtimeDone",
        "platform.report",
    ]
    assert all(EVENT_TIME.match(event["time"]) for event in received)
    env = emulator.environment(first.environment)
    logs = emulator.logs(env.id)

    [init_start] = events_of(received, "platform.initStart")
    assert init_start == {
        "initializationType": "on-demand",
        "phase": "init",
        "functionName": "lifecycle-demo",
        "functionVersion": "$LATEST",
        "instanceMaxMemory": 256,
    }
    assert event_ms(received[0]) == env.spawn_start_ns // 1_000_000
    [subscription] = events_of(received, "platform.telemetrySubscription")
    assert subscription == {
        "name": "plain-telemetry-subscriber",
        "state": "Subscribed",
        "types": ["platform"],
    }
    [runtime_done] = events_of(received, "platform.initRuntimeDone")
    assert runtime_done == {"initializationType": "on-demand", "phase": "init", "status": "success"}
    [init_report] = events_of(received, "platform.initReport")
    assert init_report["status"] == "success"
    assert init_report["metrics"]["durationMs"] == pytest.approx(env.init_duration_ms, abs=1e-3)

    # The first invocation: platform.start, runtimeDone and report with the REPORT figures.
    [start] = events_of(received, "platform.start", first.request_id)
    assert start == {
        "requestId": first.request_id,
        "version": "$LATEST",
        "tracing": {"type": "X-Amzn-Trace-Id", "value": first.trace_id},
    }
    assert event_ms(received[4]) == first.delivered_ns // 1_000_000
    line = report_line(logs, first.request_id)
    [done] = events_of(received, "platform.runtimeDone", first.request_id)
    [report] = events_of(received, "platform.report", first.request_id)
    assert done["status"] == report["status"] == "success"
    metrics = report["metrics"]
    assert metrics["durationMs"] == done["metrics"]["durationMs"]
    # The same duration rounded twice: to 2 decimals in the REPORT line, to 3 here; they
    # may differ by 0.005 + 0.0005 (24.205 beside 24.21 when the figure was 24.2054).
    assert metrics["durationMs"] == pytest.approx(float(line["duration"]), abs=0.0055)
    assert metrics["durationMs"] == pytest.approx(
        (first.end_ns - first.delivered_ns) / 1e6, abs=1e-3
    )
    assert metrics["billedDurationMs"] == int(line["billed"]) == math.ceil(metrics["durationMs"])
    assert metrics["memorySizeMB"] == int(line["size"]) == 256
    assert metrics["maxMemoryUsedMB"] == int(line["used"]) > 0
    assert metrics["initDurationMs"] == pytest.approx(first.init_duration_ms, abs=1e-3)
    assert f"Init Duration: {first.init_duration_ms:.2f} ms" in line["rest"]
    assert "restoreDurationMs" not in metrics

    # A warm invocation's report has no INIT figure.
    third = emulator.invoke({"wait_for": [["platform.report", second.request_id]]})
    [warm] = events_of(third.response["received"], "platform.report", second.request_id)
    assert "initDurationMs" not in warm["metrics"]
    assert warm["metrics"]["billedDurationMs"] == int(
        report_line(emulator.logs(env.id), second.request_id)["billed"]
    )
    # Each event once, in the order it happened.
    assert len(events_of(third.response["received"], "platform.report", first.request_id)) == 1
    # Nothing was lost to a freeze: no batch was dropped.
    assert "TELEMETRY" not in emulator.logs(env.id)


def test_snap_start_reports_the_restore_and_the_original_init(local_lambda, handlers_dir):
    emulator = local_lambda(
        "emu_telemetry.handler", handlers_dir, init_type="snap-start", snapshot_pause_s=0.1
    )
    [held] = emulator.pre_initialise(1, "snap-start")

    restored = emulator.invoke({"wait_for": [["platform.restoreReport", None]]})
    warm = emulator.invoke({"wait_for": [["platform.report", restored.request_id]]})

    assert restored.start_type_truth == "restored"
    received = warm.response["received"]
    types = [event["type"] for event in received]
    assert types[:10] == [
        "platform.initStart",
        "platform.telemetrySubscription",
        "platform.initRuntimeDone",
        "platform.initReport",
        "platform.restoreStart",
        "platform.restoreRuntimeDone",
        "platform.restoreReport",
        "platform.start",
        "platform.runtimeDone",
        "platform.report",
    ]
    env = emulator.environment(held.id)
    # The INIT before the snapshot, on its own...
    [init_report] = events_of(received, "platform.initReport")
    assert init_report["initializationType"] == "snap-start"
    assert init_report["metrics"]["durationMs"] == pytest.approx(env.init_duration_ms, abs=1e-3)
    # ...and the restore: from the thaw to the runtime's first invocation/next.
    assert env.restore_start_ns <= env.restore_done_ns <= env.restored_next_ns
    [restore_report] = events_of(received, "platform.restoreReport")
    assert restore_report["status"] == "success"
    assert restore_report["metrics"]["durationMs"] == pytest.approx(
        env.restore_duration_ms, abs=1e-3
    )
    assert events_of(received, "platform.restoreRuntimeDone") == [{"status": "success"}]
    [report] = events_of(received, "platform.report", restored.request_id)
    metrics = report["metrics"]
    assert metrics["restoreDurationMs"] == pytest.approx(env.restore_duration_ms, abs=1e-3)
    assert metrics["billedRestoreDurationMs"] == math.ceil(metrics["restoreDurationMs"])
    assert "initDurationMs" not in metrics
    line = report_line(emulator.logs(env.id), restored.request_id)
    assert f"Restore Duration: {env.restore_duration_ms:.2f} ms" in line["rest"]
    assert "Init Duration" not in line["rest"]


def test_provisioned_concurrency_reports_its_init_on_its_own_only(local_lambda, handlers_dir):
    # GIVEN an environment initialised by provisioned concurrency, ahead of any request
    emulator = local_lambda("emu_telemetry.handler", handlers_dir, provisioned_concurrency=1)
    [held] = emulator.environments
    # WHEN its first request is served, and its report read in the next one
    first = emulator.invoke({"wait_for": [["platform.initReport", None]]})
    later = emulator.invoke({"wait_for": [["platform.report", first.request_id]]})
    assert first.environment == later.environment == held.id
    assert first.start_type_truth == "provisioned"
    received = later.response["received"]
    env = emulator.environment(held.id)
    # THEN the INIT is in its own initReport, and neither the first request's REPORT line
    # nor its platform.report carries an Init Duration (the request never waited for it)
    [init_report] = events_of(received, "platform.initReport")
    assert init_report["initializationType"] == "provisioned-concurrency"
    assert init_report["metrics"]["durationMs"] == pytest.approx(env.init_duration_ms, abs=1e-3)
    [report] = events_of(received, "platform.report", first.request_id)
    assert "initDurationMs" not in report["metrics"]
    assert report["metrics"]["billedDurationMs"] > 0
    assert "Init Duration" not in report_line(emulator.logs(env.id), first.request_id)["rest"]


def test_a_timed_out_invocation_is_reported_before_the_reset(local_lambda, handlers_dir):
    emulator = local_lambda("emu_extension.handler", handlers_dir, timeout_s=0.5)
    timed_out = emulator.invoke({"sleep": 2})
    assert timed_out.outcome == "timeout"
    line = report_line(emulator.logs(timed_out.environment), timed_out.request_id)
    # The REPORT is written while the process lives: its peak memory is read, not 0.
    assert int(line["used"]) > 0
    assert float(line["duration"]) == pytest.approx(500, abs=100)


def _put(port: int, body: object, extension_id: str | None) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Content-Type": "application/json"}
    if extension_id is not None:
        headers["Lambda-Extension-Identifier"] = extension_id
    try:
        connection.request("PUT", "/2022-07-01/telemetry", json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_a_subscription_is_validated_as_documented(local_lambda, handlers_dir):
    emulator = local_lambda("emu_telemetry.handler", handlers_dir)
    first = emulator.invoke({})
    env = emulator.environment(first.environment)
    extension_id = first.response["subscription"]["extension_id"]
    good: dict[str, Any] = {
        "schemaVersion": "2022-12-13",
        "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243"},
        "types": ["platform"],
        "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
    }

    status, body = _put(env.port, good, "not-an-extension")
    assert (status, body["errorType"]) == (403, "Extension.UnknownExtensionIdentifier")
    status, body = _put(env.port, good, None)
    assert status == 403
    changes: list[tuple[dict[str, Any], str]] = [
        ({"types": ["logs"]}, "types"),
        ({"types": []}, "types"),
        ({"schemaVersion": "2020-01-01"}, "schemaVersion"),
        ({"destination": {"protocol": "TCP", "URI": "http://sandbox.localdomain:1"}}, "HTTP"),
        ({"destination": {"protocol": "HTTP", "URI": "http://example.com:4243"}}, "URI"),
        ({"destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain"}}, "URI"),
        ({"buffering": {"timeoutMs": 24}}, "timeoutMs"),
        ({"buffering": {"maxItems": 10_001}}, "maxItems"),
        ({"buffering": {"maxBytes": 1000}}, "maxBytes"),
    ]
    for change, complaint in changes:
        status, body = _put(env.port, {**good, **change}, extension_id)
        assert (status, body["errorType"]) == (400, "ValidationError"), change
        assert complaint in body["errorMessage"], change
