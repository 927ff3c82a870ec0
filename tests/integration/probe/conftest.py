"""Fixtures for the probe's integration tests in the local Lambda."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.services import MYSQL, POSTGRES_DSN, REDIS, require_module, unavailable

HANDLERS = Path(__file__).resolve().parents[1] / "fixtures" / "probe_handlers"


@pytest.fixture
def probe_handlers() -> Path:
    """The code directory of the probed handler fixtures."""
    return HANDLERS


# The servers of the stale-connection tests (stale.py): a missing driver or server skips,
# or fails under LIFECYCLE_PROBE_REQUIRE_SERVICES=1 (tests/services.py, which also marks
# the tests that ask for them ``services``). Each gives the function's variables.


@pytest.fixture
def postgres_env():
    psycopg2 = require_module("psycopg2")
    try:
        psycopg2.connect(POSTGRES_DSN, connect_timeout=2).close()
    except psycopg2.OperationalError as exc:
        unavailable(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    return {"STALE_PG_DSN": POSTGRES_DSN, "STALE_PG_DRIVER": "psycopg2"}


@pytest.fixture
def mariadb_env():
    pymysql = require_module("pymysql")
    try:
        pymysql.connect(connect_timeout=2, **MYSQL).close()
    except pymysql.err.OperationalError as exc:
        unavailable(f"MariaDB on 127.0.0.1:3306 is not reachable: {exc}")
    return {
        "STALE_MYSQL_HOST": MYSQL["host"],
        "STALE_MYSQL_PORT": str(MYSQL["port"]),
        "STALE_MYSQL_USER": MYSQL["user"],
        "STALE_MYSQL_DATABASE": MYSQL["database"],
    }


@pytest.fixture
def redis_admin():
    """A client of the test process, to kill the function's connection with."""
    redis = require_module("redis")
    admin = redis.Redis(socket_connect_timeout=2, **REDIS)
    try:
        admin.ping()
    except redis.exceptions.ConnectionError as exc:
        admin.close()
        unavailable(f"Redis on 127.0.0.1:6379 is not reachable: {exc}")
    yield admin
    admin.close()


@pytest.fixture
def redis_env(redis_admin):
    return {
        "STALE_REDIS_HOST": REDIS["host"],
        "STALE_REDIS_PORT": str(REDIS["port"]),
        # Unique, so that CLIENT LIST finds this test's function and no other.
        "STALE_REDIS_CLIENT_NAME": f"stale-probe-{uuid.uuid4().hex[:12]}",
    }


@pytest.fixture
def psycopg_env():
    psycopg = require_module("psycopg")
    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    return {"STALE_PG_DSN": POSTGRES_DSN, "STALE_PG_DRIVER": "psycopg"}
