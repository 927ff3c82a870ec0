"""Real servers on 127.0.0.1 (DESIGN.md §5) and a probed function to reuse connections in.

A missing driver or server skips the test with the reason; with
LIFECYCLE_PROBE_REQUIRE_SERVICES=1 (CI, where the servers must be there) it fails it.
"""

from __future__ import annotations

import importlib
import logging
import os

import pytest

from lifecycle_probe import probe
from lifecycle_probe.connections import install_connection_tracking
from lifecycle_probe.connections.tracking import (
    CHECK_MIN_IDLE_S,
    STALE_EVENT,
    set_check_min_idle_s,
)
from lifecycle_probe.testing import FakeContext, capture_records

# Trust authentication ignores it: it is there to prove it never leaks.
PASSWORD = "hunter2"
POSTGRES_DSN = f"host=127.0.0.1 port=5432 dbname=test user=postgres password={PASSWORD}"
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "database": "test"}
REDIS = {"host": "127.0.0.1", "port": 6379}


def unavailable(reason: str) -> None:
    """Skip for want of a service, or fail when the run requires every service."""
    if os.environ.get("LIFECYCLE_PROBE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (LIFECYCLE_PROBE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _driver(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"driver {name} is not installed")


@pytest.fixture
def tracking():
    # GIVEN connection tracking installed with the default risk threshold, and every
    # reused socket checked: these tests stand for a freeze with a boundary milliseconds
    # after the last use, where the probe would not look (CHECK_MIN_IDLE_S)
    install_connection_tracking(60.0)
    set_check_min_idle_s(0.0)
    yield install_connection_tracking
    set_check_min_idle_s(CHECK_MIN_IDLE_S)
    install_connection_tracking(60.0)


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


@pytest.fixture
def psycopg2(tracking):
    return _driver("psycopg2")


@pytest.fixture
def postgres(psycopg2):
    """Opens tracked PostgreSQL connections (autocommit: idle, not idle in transaction)."""

    def connect(**kwargs):
        connection = psycopg2.connect(POSTGRES_DSN, connect_timeout=2, **kwargs)
        connection.autocommit = True
        return connection

    try:
        connect().close()
    except psycopg2.OperationalError as exc:
        unavailable(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    opened = Opened(connect)
    yield opened
    opened.close_all()


@pytest.fixture
def psycopg(tracking):
    # GIVEN psycopg 3 tracked (what the post-import hook does once it is registered)
    from lifecycle_probe.connections import _psycopg

    module = _driver("psycopg")
    _psycopg.patch(module)
    return module


@pytest.fixture
def postgres3(psycopg):
    """Opens tracked psycopg 3 connections (autocommit: idle, not idle in transaction)."""

    def connect():
        return psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=2)

    try:
        connect().close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    opened = Opened(connect)
    yield opened
    opened.close_all()


@pytest.fixture(params=["psycopg2", "psycopg"])
def any_postgres(request):
    """Opens tracked PostgreSQL connections of psycopg2, then of psycopg 3."""
    return request.getfixturevalue("postgres" if request.param == "psycopg2" else "postgres3")


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


@pytest.fixture
def pymysql(tracking):
    return _driver("pymysql")


@pytest.fixture
def mariadb(pymysql):
    def connect():
        return pymysql.connect(connect_timeout=2, autocommit=True, **MYSQL)

    try:
        connect().close()
    except pymysql.err.OperationalError as exc:
        unavailable(f"MariaDB on 127.0.0.1:3306 is not reachable: {exc}")
    opened = Opened(connect)
    yield opened
    opened.close_all()


@pytest.fixture
def redis(tracking):
    return _driver("redis")


@pytest.fixture
def redis_server(redis):
    def connect():
        return redis.Redis(socket_connect_timeout=2, **REDIS)

    try:
        client = connect()
        client.ping()
        client.close()
    except redis.exceptions.ConnectionError as exc:
        unavailable(f"Redis on 127.0.0.1:6379 is not reachable: {exc}")
    opened = Opened(connect)
    yield opened
    opened.close_all()


class Function:
    """A probed handler: each ``invoke(body)`` is one invocation that runs ``body()``."""

    def __init__(self):
        @probe(exporter="none")
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


@pytest.fixture
def function():
    return Function()


@pytest.fixture
def warnings_logged(caplog):
    caplog.set_level(logging.WARNING, logger="lifecycle_probe")
    return caplog


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
