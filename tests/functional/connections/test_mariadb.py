"""PyMySQL connections made at INIT and reused after the server dropped them."""

from __future__ import annotations

import time

import pytest

from lifecycle_probe.connections.tracking import CHECK_MIN_IDLE_S, set_check_min_idle_s
from tests.functional.connections.support import (
    assert_failed_at_init_connection,
    assert_no_secrets,
    freezes_since_init,
    invoke_expecting,
    one_stale_warning,
    run_sql,
)


def _drop_by_wait_timeout(mariadb, connection):
    run_sql(connection, "SET SESSION wait_timeout = 1")
    time.sleep(1.5)


def _drop_by_kill(mariadb, connection):
    killer = mariadb()
    run_sql(killer, f"KILL {connection.thread_id()}")
    killer.close()
    time.sleep(0.3)


@pytest.mark.parametrize("drop", [_drop_by_wait_timeout, _drop_by_kill], ids=["timeout", "kill"])
def test_a_query_on_a_connection_dropped_while_frozen_fails_and_is_reported(
    mariadb, pymysql, function, warnings_logged, drop
):
    # GIVEN a connection made at INIT that the server drops before the next invocation
    connection = mariadb()
    run_sql(connection, "SELECT 1")
    last_use = time.time()
    drop(mariadb, connection)
    idle_s = time.time() - last_use

    # WHEN the first invocation queries it
    # THEN the driver's own error reached the caller unchanged, and the reuse failed
    errors = (pymysql.err.OperationalError, pymysql.err.InterfaceError)
    invoke_expecting(function, lambda: run_sql(connection, "SELECT 1"), errors)
    [event] = function.stale_events()
    assert_failed_at_init_connection(event, db_system="mysql", port=3306, idle_s=idle_s)
    line = one_stale_warning(warnings_logged)
    assert "pymysql" in line
    assert "127.0.0.1:3306" in line
    assert_no_secrets(function.stale_events(), warnings_logged)


@pytest.mark.parametrize(
    ("check_min_idle_s", "check"),
    [(0.0, "dead"), (CHECK_MIN_IDLE_S, "skipped")],
    ids=["socket-checked", "back-to-back"],
)
def test_ping_with_reconnect_is_detected_with_the_cost_of_reconnecting(
    mariadb, function, warnings_logged, check_min_idle_s, check
):
    # GIVEN a connection made at INIT and killed by the server 0.3 s before the invocation,
    # its socket checked, or (the probe's own threshold) not looked at after so short a
    # time (the back-to-back path, which only builds a record when something happened)
    set_check_min_idle_s(check_min_idle_s)
    connection = mariadb()
    _drop_by_kill(mariadb, connection)

    # WHEN the invocation guards it with PyMySQL's ping(reconnect=True), then queries
    def body():
        with pytest.warns(DeprecationWarning, match="reconnect"):
            connection.ping(reconnect=True)
        return run_sql(connection, "SELECT 1")

    assert function.invoke(body) == ((1,),)

    # THEN the reuse is detected, with what reconnecting cost
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "detected"
    assert event["lifecycle.connection.check"] == check
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.age_s"] >= 0.3  # the session that died
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2
    assert "reconnecting took" in warnings_logged.text
    # AND the new session counts as made in this invocation: its next reuse says so
    assert function.invoke(lambda: run_sql(connection, "SELECT 2")) == ((2,),)
    assert function.stale_events() == []


def test_a_connection_used_within_its_timeout_is_not_reported(mariadb, function, warnings_logged):
    connection = mariadb()
    run_sql(connection, "SET SESSION wait_timeout = 5")
    time.sleep(0.2)
    assert function.invoke(lambda: run_sql(connection, "SELECT 1")) == ((1,),)
    assert function.stale_events() == []
    assert "stale connection" not in warnings_logged.text
    # (tracked all along: silence is not tracking switched off)
    assert connection._lifecycle_probe_connection.freezes == freezes_since_init(function, 1)


def test_a_live_connection_idle_longer_than_the_threshold_is_a_risk(
    mariadb, pymysql, tracking, function
):
    tracking(0.2)
    connection = mariadb()
    assert isinstance(connection, pymysql.connections.Connection)
    time.sleep(0.4)
    assert function.invoke(lambda: run_sql(connection, "SELECT 1")) == ((1,),)
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "risk"
    assert event["lifecycle.connection.check"] == "alive"
    assert event["lifecycle.connection.created_in"] == "init"
