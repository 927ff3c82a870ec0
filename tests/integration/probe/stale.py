"""Stale connections in the local Lambda: the function's settings and reading its reports.

Shared by the stale-connection tests in the runtime (test_stale_*_in_runtime.py). The
handler fixtures (tests/integration/fixtures/probe_handlers/stale_*.py) connect at INIT
and read their settings from the variables :func:`function_env` sets; the reports are read
back from the OTLP file the runtime process wrote.
"""

from __future__ import annotations

from typing import Any

from lifecycle_probe.records import STALE_EVENT
from tests.integration.probe.otlp import attributes, read_otlp

SERVER_IDLE_TIMEOUT_S = 1
FREEZE_S = 2.0  # longer than the server's idle timeout
# How the fixtures put the hooks in place before importing the driver: install().
WORKING_HOOKS = "install"


def function_env(path, extra, *, server_idle_timeout_s=SERVER_IDLE_TIMEOUT_S, hooks=WORKING_HOOKS):
    return {
        "STALE_HOOKS": hooks,
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
        "LIFECYCLE_PROBE_OTLP_FILE": str(path),
        "LIFECYCLE_PROBE_FLUSH": "after-response",  # exported before each freeze
        "STALE_SERVER_IDLE_TIMEOUT_S": str(server_idle_timeout_s),
        **extra,
    }


def invocation_spans(path):
    """(invocation spans by request id, metric points) of an OTLP file."""
    spans, points = read_otlp(path)
    return {s["attrs"]["faas.invocation_id"]: s for s in spans if s["kind"] == 2}, points


def stale_events(span):
    """The attributes of each stale-connection event of an OTLP JSON span."""
    return [attributes(e) for e in span.get("events", []) if e["name"] == STALE_EVENT]


def one_stale_event(span):
    events = stale_events(span)
    assert len(events) == 1, events
    return events[0]


def stale_counts(points):
    """The ``lifecycle.connection.stale`` counter's total per attribute set."""
    counts: dict[tuple[tuple[str, Any], ...], int] = {}
    for point in points:
        if point["metric"] == "lifecycle.connection.stale":
            key = tuple(sorted(point["attrs"].items()))
            counts[key] = counts.get(key, 0) + int(point["asInt"])
    return {key: count for key, count in counts.items() if count}


def assert_stale_event(event, *, db_system, port, outcome):
    """``db_system`` None: an HTTP connection, whose event carries no ``db.system``."""
    if db_system is None:
        assert "db.system" not in event
    else:
        assert event["db.system"] == db_system
    assert event["server.address"] == "127.0.0.1"
    assert event["server.port"] == port
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.outcome"] == outcome
    assert FREEZE_S <= event["lifecycle.connection.idle_s"] < 10
    assert event["lifecycle.connection.age_s"] >= event["lifecycle.connection.idle_s"]
    # the socket check saw the server's goodbye before the first byte was sent
    assert event["lifecycle.connection.check"] == "dead"


def assert_one_stale_metric(points, *, db_system, outcome):
    """``db_system`` None: the HTTP connections' count, which has no ``db.system``."""
    key: tuple[tuple[str, Any], ...] = (("lifecycle.connection.outcome", outcome),)
    if db_system is not None:
        key = (("db.system", db_system), *key)
    assert stale_counts(points) == {key: 1}


def freeze_and_reuse(emulator):
    """Invoke once within the server's timeout, stay frozen past it, invoke again."""
    first = emulator.invoke({})
    emulator.freeze_for(FREEZE_S)
    second = emulator.invoke({})
    emulator.close()  # every runtime process is gone: the file holds all there will be
    assert second.environment == first.environment
    assert (first.cold, second.cold) == (True, False)
    return first, second


def assert_reused_across_two_boundaries(event):
    """A tracked connection used at INIT, in the first invocation and in the second."""
    # the freeze between the 1st and the 2nd (a cold start's INIT went straight on)
    assert event["lifecycle.connection.freezes"] == 1
    assert event["lifecycle.connection.uses"] == 3  # this reuse included
