"""psycopg 3 connections made at INIT and reused after the server dropped them."""

from __future__ import annotations

import time

import pytest

from lifecycle_probe.connections import _psycopg
from tests.functional.connections.support import (
    assert_failed_at_init_connection,
    assert_no_secrets,
    freezes_since_init,
    invoke_expecting,
    one_stale_warning,
    run_sql,
)
from tests.services import POSTGRES_DSN


def _drop_by_idle_session_timeout(postgres3, connection):
    run_sql(connection, "SET idle_session_timeout = '1s'")
    time.sleep(1.5)


def _drop_by_terminate_backend(postgres3, connection):
    pid = connection.info.backend_pid
    killer = postgres3()
    assert run_sql(killer, f"SELECT pg_terminate_backend({pid})") == [(True,)]
    killer.close()
    time.sleep(0.3)


@pytest.mark.parametrize(
    "drop", [_drop_by_idle_session_timeout, _drop_by_terminate_backend], ids=["timeout", "kill"]
)
def test_a_query_on_a_connection_dropped_while_frozen_fails_and_is_reported(
    postgres3, psycopg, function, warnings_logged, drop
):
    # GIVEN a connection made at INIT that the server drops before the next invocation
    connection = postgres3()
    run_sql(connection, "SELECT 1")
    last_use = time.time()
    drop(postgres3, connection)
    idle_s = time.time() - last_use

    # WHEN the first invocation queries it
    # THEN the driver's own error reached the handler's caller, unchanged
    error = invoke_expecting(
        function, lambda: run_sql(connection, "SELECT 1"), psycopg.OperationalError
    )
    assert connection.broken
    # AND the reuse is reported as failed, with the socket check having seen it dead
    [event] = function.stale_events()
    assert_failed_at_init_connection(event, db_system="postgresql", port=5432, idle_s=idle_s)
    assert event["lifecycle.connection.age_s"] >= event["lifecycle.connection.idle_s"]
    assert event["lifecycle.connection.freezes"] == freezes_since_init(function, 1)
    assert event["error.type"] == type(error).__qualname__
    # AND one warning names the client, the server and the idle time
    line = one_stale_warning(warnings_logged)
    assert "psycopg connection" in line
    assert "127.0.0.1:5432" in line
    assert f"{event['lifecycle.connection.idle_s']:.1f} s idle" in line
    assert_no_secrets(function.stale_events(), warnings_logged)


def test_a_connection_the_user_closed_is_not_reported_as_failed(
    postgres3, psycopg, function, warnings_logged
):
    # GIVEN a connection made at INIT and closed by the user's own code
    connection = postgres3()
    run_sql(connection, "SELECT 1")
    connection.close()

    # WHEN the next invocation uses it anyway
    with pytest.raises(psycopg.OperationalError):
        function.invoke(lambda: connection.execute("SELECT 1"))

    # THEN that is the user's mistake, not a stale connection
    assert not connection.broken
    assert function.stale_events() == []
    assert "stale connection" not in warnings_logged.text


def test_tracked_connections_and_cursors_stay_transparent(postgres3, psycopg, function):
    # GIVEN tracked connections from both of psycopg's entry points
    connection = postgres3()
    other = psycopg.Connection.connect(POSTGRES_DSN, connect_timeout=2)
    other.close()

    # THEN they are psycopg's own connections, not proxies
    assert type(connection) is psycopg.Connection
    assert _psycopg.STATE in vars(connection)
    assert _psycopg.STATE in vars(other)
    assert connection.info.port == 5432
    # AND connections, cursors, transactions and server-side cursors work as usual
    with connection as entered:
        assert entered is connection
        with connection.cursor() as cursor:
            assert isinstance(cursor, psycopg.Cursor)
            cursor.execute("SELECT generate_series(1, 3)")
            assert [row for (row,) in cursor] == [1, 2, 3]
        assert connection.execute("SELECT %s::int", (7,)).fetchone() == (7,)
        with connection.transaction(), connection.cursor(name="named") as named:
            named.execute("SELECT generate_series(1, 4)")
            assert named.fetchmany(2) == [(1,), (2,)]
            assert named.fetchall() == [(3,), (4,)]
    # AND leaving the `with` block closed the connection, as psycopg 3 does
    assert connection.closed
    assert not connection.broken


def test_a_tracking_failure_leaves_the_connection_working_untracked(
    postgres3, psycopg, monkeypatch
):
    # GIVEN tracking that breaks while it sets a connection up
    def broken(connection):
        raise RuntimeError("tracking bug")

    monkeypatch.setattr(_psycopg, "postgres_server", broken)

    # WHEN a connection is made
    connection = postgres3()

    # THEN the user's code never sees it: the connection works, only untracked
    assert _psycopg.STATE not in vars(connection)
    assert run_sql(connection, "SELECT 1") == [(1,)]
