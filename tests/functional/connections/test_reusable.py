"""The safe-reuse helper: a cached connection checked once per invocation, remade if dead."""

from __future__ import annotations

import time

from lifecycle_probe.connections.reuse import is_alive, reusable
from tests.functional.connections.support import assert_no_secrets


def query(connection, sql):
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()


def test_a_postgres_connection_dropped_while_frozen_is_replaced_transparently(
    postgres, function, warnings_logged
):
    # GIVEN a helper whose connection is made at INIT and a second, killing, connection
    get_connection = reusable(postgres)
    first = get_connection()
    pid = first.get_backend_pid()
    assert function.invoke(lambda: query(get_connection(), "SELECT 1")) == (1,)
    # WHEN the server ends the session while the environment is "frozen"
    killer = postgres()
    assert query(killer, f"SELECT pg_terminate_backend({pid})") == (True,)
    time.sleep(0.3)
    # THEN the next invocation gets a new, working connection without an error
    result = function.invoke(lambda: query(get_connection(), "SELECT pg_backend_pid()"))
    assert result[0] != pid
    assert get_connection.reconnects == 1
    events = function.stale_events()
    replaced = [e for e in events if e.get("lifecycle.connection.reconnect_s")]
    assert len(replaced) == 1
    event = replaced[0]
    assert event["lifecycle.connection.outcome"] == "detected"
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.check"] == "dead"
    assert event["db.system"] == "postgresql"
    assert (event["server.address"], event["server.port"]) == ("127.0.0.1", 5432)
    assert 0 < event["lifecycle.connection.reconnect_s"] < 5
    assert event["lifecycle.connection.idle_s"] >= 0.3
    assert_no_secrets(events, warnings_logged)


def test_a_live_connection_is_kept_and_checked_once_per_invocation(postgres, function):
    connects = []

    def connect():
        connects.append(1)
        return postgres()

    get_connection = reusable(connect)

    def five_uses():
        connections = {id(get_connection()) for _ in range(5)}
        return len(connections)

    for _ in range(3):
        assert function.invoke(five_uses) == 1
    assert len(connects) == 1
    assert get_connection.reconnects == 0
    assert all(not function.stale_events(i) for i in range(3))


def test_a_mariadb_connection_past_its_wait_timeout_is_replaced(mariadb, function):
    get_connection = reusable(mariadb)
    connection = get_connection()
    query(connection, "SET SESSION wait_timeout = 1")
    thread_id = connection.thread_id()
    function.invoke(lambda: query(get_connection(), "SELECT 1"))
    time.sleep(1.6)  # the server closes the idle session after 1 s
    new_id = function.invoke(lambda: get_connection().thread_id())
    assert new_id != thread_id
    assert get_connection.reconnects == 1


def test_a_custom_validate_decides_and_a_failing_one_keeps_the_connection(function):
    made = []

    def connect():
        made.append(object())
        return made[-1]

    verdicts = iter([False, True])
    get_connection = reusable(connect, validate=lambda c: next(verdicts))
    first = function.invoke(get_connection)
    second = function.invoke(get_connection)  # validate says dead: replaced
    third = function.invoke(get_connection)  # validate says alive: kept
    assert (first is made[0], second is made[1], third is made[1]) == (True, True, True)

    def broken(connection):
        raise RuntimeError("check crashed")

    keeper = reusable(connect, validate=broken)
    kept = function.invoke(keeper)
    assert function.invoke(keeper) is kept  # a check that cannot tell keeps it


def test_is_alive_on_a_closed_postgres_connection(postgres):
    connection = postgres()
    assert is_alive(connection)
    connection.close()
    assert not is_alive(connection)


def test_a_terminated_connection_of_a_users_connection_class_is_dead(postgres, psycopg2):
    # GIVEN a connection of the user's own subclass of psycopg2's connection class
    app_connection = type("AppConnection", (psycopg2.extensions.connection,), {})

    connection = postgres(connection_factory=app_connection)
    assert is_alive(connection)
    # WHEN the server ends its session (a FATAL ErrorResponse, then FIN)
    killer = postgres()
    assert query(killer, f"SELECT pg_terminate_backend({connection.get_backend_pid()})")
    time.sleep(0.3)
    # THEN it is judged by psycopg2's descriptor (its class's module is not psycopg2's)
    assert not is_alive(connection)
