"""Fixtures of the connection tests: real servers on 127.0.0.1 (DESIGN.md §5), tracking.

A missing driver or server skips the test with the reason; with
LIFECYCLE_PROBE_REQUIRE_SERVICES=1 (CI, where the servers must be there) it fails it
(tests/services.py, which also marks ``services`` every test asking for a server's fixture).
"""

from __future__ import annotations

import logging
import socket

import pytest

from lifecycle_probe.connections.tracking import (
    CHECK_MIN_IDLE_S,
    set_check_min_idle_s,
)
from tests.functional.connections.support import Function, Opened, track_connections
from tests.services import MYSQL, POSTGRES_DSN, REDIS, require_module, unavailable

__all__ = ["POSTGRES_DSN", "unavailable"]  # still imported from here by older test modules


@pytest.fixture
def tracking():
    # GIVEN connection tracking installed with the default risk threshold, and every
    # reused socket checked: these tests stand for a freeze with a boundary milliseconds
    # after the last use, where the probe would not look (CHECK_MIN_IDLE_S)
    track_connections()
    set_check_min_idle_s(0.0)

    def risk_after(stale_idle_s):
        track_connections(stale_idle_s=stale_idle_s)

    yield risk_after
    set_check_min_idle_s(CHECK_MIN_IDLE_S)
    # (the autouse fresh environment puts the process-wide options back to the defaults)


@pytest.fixture
def psycopg2(tracking):
    return require_module("psycopg2")


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

    module = require_module("psycopg")
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


@pytest.fixture
def pymysql(tracking):
    return require_module("pymysql")


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
    return require_module("redis")


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


@pytest.fixture
def pair():
    """(ours, theirs): a connected socket pair, ours standing for a client's socket."""
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.fixture
def function():
    return Function()


@pytest.fixture
def warnings_logged(caplog):
    caplog.set_level(logging.WARNING, logger="lifecycle_probe")
    return caplog
