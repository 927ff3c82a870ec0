"""PostgreSQL connections made at INIT and reused after the server dropped them: psycopg2,
and psycopg 3 too where the scenario reads the same for both (`any_postgres`)."""

from __future__ import annotations

import time

import pytest

from tests.functional.connections.support import (
    assert_failed_at_init_connection,
    assert_no_secrets,
    freezes_since_init,
    invoke_expecting,
    one_stale_warning,
    run_sql,
    tracked_state,
)


def _drop_by_idle_session_timeout(postgres, connection):
    run_sql(connection, "SET idle_session_timeout = '1s'")
    time.sleep(1.5)


def _drop_by_terminate_backend(postgres, connection):
    pid = connection.get_backend_pid()
    killer = postgres()
    assert run_sql(killer, f"SELECT pg_terminate_backend({pid})") == [(True,)]
    killer.close()
    time.sleep(0.3)


@pytest.mark.parametrize(
    "drop", [_drop_by_idle_session_timeout, _drop_by_terminate_backend], ids=["timeout", "kill"]
)
def test_a_query_on_a_connection_dropped_while_frozen_fails_and_is_reported(
    postgres, psycopg2, function, warnings_logged, drop
):
    # GIVEN a connection made at INIT that the server drops before the next invocation
    connection = postgres()
    run_sql(connection, "SELECT 1")
    last_use = time.time()
    drop(postgres, connection)
    idle_s = time.time() - last_use

    # WHEN the first invocation queries it
    # THEN the driver's own error reached the handler's caller, unchanged
    invoke_expecting(function, lambda: run_sql(connection, "SELECT 1"), psycopg2.OperationalError)
    assert connection.closed == 2
    # AND the reuse is reported as failed, with the socket check having seen it dead
    [event] = function.stale_events()
    assert_failed_at_init_connection(event, db_system="postgresql", port=5432, idle_s=idle_s)
    assert event["lifecycle.connection.age_s"] >= event["lifecycle.connection.idle_s"]
    # (the 1.5 s wait for the server's timeout makes that first start proactive: frozen)
    assert event["lifecycle.connection.freezes"] == freezes_since_init(function, 1)
    # AND one warning names the client, the server and the idle time
    line = one_stale_warning(warnings_logged)
    assert "psycopg2" in line
    assert "127.0.0.1:5432" in line
    assert f"{event['lifecycle.connection.idle_s']:.1f} s idle" in line
    assert_no_secrets(function.stale_events(), warnings_logged)


@pytest.mark.parametrize(("idle_s", "check"), [(0.0, "skipped"), (2.0, "dead")])
def test_the_socket_is_checked_only_after_a_second_idle(
    postgres, psycopg2, function, idle_s, check
):
    # GIVEN the probe's own threshold for the socket check (the fixture checks always)
    from lifecycle_probe.connections.tracking import CHECK_MIN_IDLE_S, set_check_min_idle_s

    set_check_min_idle_s(CHECK_MIN_IDLE_S)
    # AND a connection the server killed, last used at once or (as after a freeze) 2 s ago
    connection = postgres()
    run_sql(connection, "SELECT 1")
    _drop_by_terminate_backend(postgres, connection)
    connection._lifecycle_probe_state.last_use_ns -= int(idle_s * 1e9)

    # WHEN the next invocation queries it
    with pytest.raises(psycopg2.OperationalError):
        function.invoke(lambda: run_sql(connection, "SELECT 1"))

    # THEN the failure is reported either way; the socket was looked at only after 1 s
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "failed"
    assert event["lifecycle.connection.check"] == check
    assert event["lifecycle.connection.idle_s"] >= idle_s


def test_a_back_to_back_reuse_is_counted_and_a_later_failure_says_so(postgres, psycopg2, function):
    # GIVEN the probe's own thresholds, and a connection used at INIT
    from lifecycle_probe.connections.tracking import CHECK_MIN_IDLE_S, set_check_min_idle_s

    set_check_min_idle_s(CHECK_MIN_IDLE_S)
    connection = postgres()
    run_sql(connection, "SELECT 1")
    # WHEN the first invocation reuses it at once (nothing to look at, nothing to report)
    assert function.invoke(lambda: run_sql(connection, "SELECT 1")) == [(1,)]
    assert function.stale_events() == []
    # AND the server kills it before a second invocation, 2 s later (as after a freeze)
    _drop_by_terminate_backend(postgres, connection)
    connection._lifecycle_probe_state.last_use_ns -= 2_000_000_000
    with pytest.raises(psycopg2.OperationalError):
        function.invoke(lambda: run_sql(connection, "SELECT 1"))
    # THEN the failure counts both boundaries and all three uses
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "failed"
    assert event["lifecycle.connection.check"] == "dead"
    assert event["lifecycle.connection.freezes"] == freezes_since_init(function, 2)
    assert event["lifecycle.connection.uses"] == 3
    assert event["lifecycle.connection.created_in"] == "init"


def test_a_connection_used_within_its_timeout_is_not_reported(
    any_postgres, function, warnings_logged
):
    # GIVEN a connection made at INIT with a server idle timeout far longer than the pause
    connection = any_postgres()
    run_sql(connection, "SET idle_session_timeout = '5s'")
    time.sleep(0.2)

    # WHEN two invocations use it
    assert function.invoke(lambda: run_sql(connection, "SELECT 1")) == [(1,)]
    assert function.invoke(lambda: run_sql(connection, "SELECT 2")) == [(2,)]

    # THEN nothing is reported
    assert function.stale_events(0) == []
    assert function.stale_events(1) == []
    assert "stale connection" not in warnings_logged.text
    # (tracked all along: silence is not tracking switched off)
    assert tracked_state(connection).uses == 3
    assert tracked_state(connection).freezes == freezes_since_init(function, 2)


def test_a_live_connection_idle_longer_than_the_threshold_is_a_risk(
    any_postgres, tracking, function, warnings_logged
):
    # GIVEN a risk threshold of 0.2 s and a connection made during the first invocation
    tracking(0.2)
    connection = function.invoke(any_postgres)
    run_sql(connection, "SELECT 1")  # used after the handler returned: still invocation 1
    time.sleep(0.4)

    # WHEN the next invocation uses it, and it works
    assert function.invoke(lambda: run_sql(connection, "SELECT 1")) == [(1,)]

    # THEN it is reported as a risk
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "risk"
    assert event["lifecycle.connection.created_in"] == "invocation:1"
    assert event["lifecycle.connection.check"] == "alive"
    assert event["lifecycle.connection.idle_s"] == pytest.approx(0.4, abs=0.2)
    assert_no_secrets(function.stale_events(), warnings_logged)


def test_a_long_last_query_is_use_not_idle_time(postgres, tracking, function):
    # GIVEN a risk threshold of 1 s, and a first invocation whose last query takes 1.2 s
    tracking(1.0)
    connection = postgres()
    assert function.invoke(lambda: run_sql(connection, "SELECT pg_sleep(1.2)")) == [("",)]
    # WHEN the next invocation reuses the connection straight away
    assert function.invoke(lambda: run_sql(connection, "SELECT 1")) == [(1,)]
    # THEN it sat idle for no time at all: nothing to report
    assert function.stale_events() == []


def test_tracked_connections_and_cursors_stay_transparent(postgres, psycopg2, function):
    # GIVEN a tracked connection
    connection = postgres()

    # THEN it passes for psycopg2's own types, in and out of context managers
    assert isinstance(connection, psycopg2.extensions.connection)
    with connection as entered:
        assert entered is connection
        with connection.cursor() as cursor:
            assert isinstance(cursor, psycopg2.extensions.cursor)
            cursor.execute("SELECT generate_series(1, 3)")
            assert [row for (row,) in cursor] == [1, 2, 3]
    # AND psycopg2's own C functions, which refuse anything but a real connection or
    # cursor, accept it and its cursors
    from psycopg2 import extras, sql  # type: ignore[import-untyped]

    extras.register_default_jsonb(conn_or_curs=connection)
    assert sql.Identifier("orders").as_string(connection) == '"orders"'
    with connection.cursor(cursor_factory=extras.RealDictCursor) as cursor:
        extras.execute_values(cursor, "SELECT * FROM (VALUES %s) AS v(n)", [(1,), (2,)])
        assert [row["n"] for row in cursor.fetchall()] == [1, 2]
        assert cursor.connection is connection
    assert connection.info.port == 5432
    # AND a cursor_factory set on the connection later is honoured, still tracked
    connection.cursor_factory = extras.RealDictCursor
    for _ in range(2):  # the first call makes the tracked class, the second reuses it
        with connection.cursor() as cursor:
            assert isinstance(cursor, extras.RealDictCursor)
            assert type(cursor) is not extras.RealDictCursor  # the tracked subclass
            cursor.execute("SELECT 7 AS n")
            assert cursor.fetchone() == {"n": 7}
