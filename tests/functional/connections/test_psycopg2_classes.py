"""psycopg2's own connection and cursor classes behave as without the probe, and stay tracked."""

from __future__ import annotations

import gc
import logging
import time
from unittest import mock

import pytest

from tests.services import POSTGRES_DSN, require_module


@pytest.fixture
def psycopg2_extras(psycopg2):
    return require_module("psycopg2.extras")


def _uses(connection):
    return connection._lifecycle_probe_state.uses


@pytest.mark.parametrize(
    ("connection_class", "row"),
    [
        ("DictConnection", lambda row: row["n"] == 1 and row[0] == 1),
        ("RealDictConnection", lambda row: row == {"n": 1}),
        ("NamedTupleConnection", lambda row: row.n == 1),
    ],
)
def test_extras_connections_keep_their_own_cursors_and_are_tracked(
    postgres, psycopg2_extras, connection_class, row
):
    # GIVEN a connection of one of psycopg2.extras' classes, whose cursor() picks its rows
    connection = postgres(connection_factory=getattr(psycopg2_extras, connection_class))
    before = _uses(connection)
    # WHEN a cursor is made without a factory and queried
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 AS n")
        fetched = cursor.fetchone()
    # THEN the rows are the class's own, and the query was tracked
    assert row(fetched)
    assert isinstance(connection, getattr(psycopg2_extras, connection_class))
    assert _uses(connection) == before + 1


def test_a_logging_connection_still_logs(postgres, psycopg2_extras, caplog):
    connection = postgres(connection_factory=psycopg2_extras.LoggingConnection)
    logger = logging.getLogger("test.psycopg2.logging")
    connection.initialize(logger)
    with (
        caplog.at_level(logging.DEBUG, logger="test.psycopg2.logging"),
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT 42")
        assert cursor.fetchone() == (42,)
    assert "SELECT 42" in caplog.text
    assert isinstance(cursor, psycopg2_extras.LoggingCursor)
    assert _uses(connection) >= 1


def test_a_connection_class_whose_cursor_takes_no_factory_works(
    postgres, psycopg2_extras, psycopg2
):
    # GIVEN a user's connection class with a cursor() of its own that takes no factory
    plain = psycopg2.extensions.connection

    class Mine(plain):  # type: ignore[misc,valid-type]  # psycopg2 ships no types
        def cursor(self, name=None):
            return super().cursor(name, cursor_factory=psycopg2_extras.RealDictCursor)

    connection = postgres(connection_factory=Mine)
    # WHEN a cursor is made THEN it is the class's own, and tracked
    with connection.cursor() as cursor:
        cursor.execute("SELECT 5 AS n")
        assert cursor.fetchone() == {"n": 5}
    assert _uses(connection) == 1


def test_an_unhashable_cursor_factory_works(postgres, psycopg2):
    # GIVEN a cursor factory that cannot be a dictionary key
    class Factory:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, *args, **kwargs):
            return psycopg2.extensions.cursor(*args, **kwargs)

    connection = postgres()
    connection.cursor_factory = Factory()
    # WHEN a cursor is made THEN psycopg2's answer comes through, as without the probe
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_cursor_class_patched_later_is_honoured(postgres, psycopg2_extras):
    connection = postgres(connection_factory=psycopg2_extras.DictConnection)
    with (
        mock.patch.object(psycopg2_extras.DictCursor, "execute", return_value="patched"),
        connection.cursor() as cursor,
    ):
        assert cursor.execute("SELECT 1") == "patched"


def test_a_tracked_class_given_back_as_factory_is_not_wrapped_again(postgres):
    connection = postgres()
    connection.cursor_factory = type(connection.cursor())
    before = _uses(connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert _uses(connection) == before + 1


def test_a_dropped_connection_closes_its_session_at_once(postgres, psycopg2):
    # GIVEN a tracked connection and its server session, with the garbage collector off
    watcher = postgres()
    gc.disable()
    try:
        # (not through the fixture, which keeps its connections to close them at the end)
        connection = psycopg2.connect(POSTGRES_DSN, connect_timeout=2)
        assert connection._lifecycle_probe_state is not None
        pid = connection.get_backend_pid()
        # WHEN its last reference goes
        del connection
        # THEN psycopg2 closes it (no reference cycle keeps it): the session ends
        deadline = time.monotonic() + 5
        with watcher.cursor() as cursor:
            while True:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
                (count,) = cursor.fetchone()
                if count == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert count == 0
    finally:
        gc.enable()
