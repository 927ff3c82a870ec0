"""redis-py connections made at INIT and reused after the server killed them."""

from __future__ import annotations

import time

import pytest

from tests.functional.connections.support import assert_no_secrets, one_stale_warning


def test_a_killed_pooled_connection_is_detected_and_replaced_transparently(
    redis_server, function, warnings_logged
):
    # GIVEN a client whose pooled connection, made at INIT, the server kills
    client = redis_server()
    client.set("lifecycle_probe:test", "1")
    last_use = time.time()
    killer = redis_server()
    assert killer.client_kill_filter(_id=client.client_id()) == 1
    time.sleep(0.3)
    idle_s = time.time() - last_use

    # WHEN the first invocation uses it: redis-py reconnects by itself, and it works
    assert function.invoke(lambda: client.get("lifecycle_probe:test")) == b"1"

    # THEN the reuse is detected, with what reconnecting cost
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "detected"
    assert event["db.system"] == "redis"
    assert event["server.address"] == "127.0.0.1"
    assert event["server.port"] == 6379
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.check"] == "dead"
    assert event["lifecycle.connection.idle_s"] == pytest.approx(idle_s, abs=0.3)
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2
    line = one_stale_warning(warnings_logged)
    assert "redis-py" in line
    assert "127.0.0.1:6379" in line
    assert_no_secrets(function.stale_events(), warnings_logged)


def test_a_connection_used_within_its_timeout_is_not_reported(
    redis_server, function, warnings_logged
):
    client = redis_server()
    client.ping()
    time.sleep(0.2)
    assert function.invoke(client.ping) is True
    assert function.invoke(client.ping) is True
    assert function.stale_events(0) == []
    assert function.stale_events(1) == []
    assert "stale connection" not in warnings_logged.text


def test_a_live_connection_idle_longer_than_the_threshold_is_a_risk(
    redis_server, tracking, function
):
    tracking(0.2)
    client = redis_server()
    client.ping()
    time.sleep(0.4)
    assert function.invoke(client.ping) is True
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "risk"
    assert event["lifecycle.connection.check"] == "alive"
    assert event["lifecycle.connection.created_in"] == "init"
