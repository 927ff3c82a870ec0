"""Helpers of the connection tests: a probed function to reuse connections in, and checks.

A plain module (the fixtures are in conftest.py): test modules import it, never a
conftest.
"""

from __future__ import annotations

import pytest

from lifecycle_probe import probe
from lifecycle_probe.config import Config
from lifecycle_probe.connections.tracking import STALE_EVENT
from lifecycle_probe.installation import install_connection_tracking
from lifecycle_probe.testing import FakeContext, capture_records
from tests.services import PASSWORD


def track_connections(**options):
    """Put tracking in place the one way install() and @probe do, ``options`` asked for."""
    install_connection_tracking(Config.resolve(**options), options)


class Opened:
    """Connections a test opened, all closed at teardown (filterwarnings=error)."""

    def __init__(self, connect):
        self._connect = connect
        self.connections = []

    def __call__(self, *args, **kwargs):
        connection = self._connect(*args, **kwargs)
        self.connections.append(connection)
        return connection

    def close_all(self):
        for connection in self.connections:
            try:
                connection.close()
            except Exception:
                pass


def tracked_state(connection):
    """The probe's ConnectionState of a tracked connection (psycopg2 keeps it as an
    attribute of its connection subclass, the drivers patched in place in ``__dict__``)."""
    state = getattr(connection, "_lifecycle_probe_state", None)
    return state if state is not None else vars(connection)["_lifecycle_probe_connection"]


def run_sql(connection, sql):
    """Run one statement on a DB-API connection: its rows, or None when it has none."""
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else None


class Function:
    """A probed handler: each ``invoke(body)`` is one invocation that runs ``body()``."""

    def __init__(self, **options):
        @probe(exporter="none", **options)
        def handler(event, context):
            return event["run"]()

        self._handler = handler
        self.records = []

    def invoke(self, body):
        with capture_records() as captured:
            try:
                return self._handler({"run": body}, FakeContext())
            finally:
                self.records.extend(captured.records)

    def stale_events(self, index=-1):
        """The attributes of each stale-connection event of one invocation's record."""
        return [
            dict(event.attributes)
            for event in self.records[index].events
            if event.name == STALE_EVENT
        ]


def freezes_since_init(function, invocation):
    """The freezes a connection made at INIT has lived through when used in ``function``'s
    ``invocation``-th invocation: one per boundary between invocations, and one before the
    first event unless that first start was cold (its caller waited: no freeze)."""
    return invocation - 1 + (function.records[0].facts.start != "cold")


def assert_no_secrets(events, caplog):
    text = repr(events) + caplog.text
    assert PASSWORD not in text
    assert "password" not in text.lower()
    assert "dbname=" not in text
    # No query text either.
    assert "SELECT" not in text.upper()


def invoke_expecting(function, use, error):
    """Invoke ``use`` in the probed function, expecting ``error``; check that the caller
    got the very exception the driver raised inside (unchanged) and return it."""
    raised = []

    def body():
        try:
            use()
        except Exception as exc:
            raised.append(exc)
            raise

    with pytest.raises(error) as caught:
        function.invoke(body)
    assert caught.value is raised[0]
    return caught.value


def assert_failed_at_init_connection(event, *, db_system, port, idle_s):
    """A ``failed`` reuse of a connection made at INIT, idle ``idle_s`` (± 0.3 s), whose
    socket check saw it dead."""
    assert event["lifecycle.connection.outcome"] == "failed"
    assert event["db.system"] == db_system
    assert event["server.address"] == "127.0.0.1"
    assert event["server.port"] == port
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.idle_s"] == pytest.approx(idle_s, abs=0.3)
    assert event["lifecycle.connection.check"] == "dead"


def one_stale_warning(caplog):
    """The one warning line the probe logged about a stale connection."""
    [line] = [r.getMessage() for r in caplog.records if "stale connection" in r.message]
    return line
