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
