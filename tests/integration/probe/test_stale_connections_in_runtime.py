"""Stale connections made at INIT, reused after a real freeze (SIGSTOP) in the local Lambda.

Each function connects at INIT and gives its session a 1 s server idle timeout
(PostgreSQL ``idle_session_timeout``, MariaDB ``wait_timeout``) or, for Redis, has its
client killed by name from here while it is frozen. The reports are read back from the
OTLP file the runtime process wrote. A missing driver or server skips; with
LIFECYCLE_PROBE_REQUIRE_SERVICES=1 it fails (tests/functional/connections/conftest.py).
"""

from __future__ import annotations

import importlib
import uuid
from typing import Any

import pytest

from lifecycle_probe.connections.tracking import STALE_EVENT
from tests.functional.connections.conftest import MYSQL, POSTGRES_DSN, REDIS, unavailable
from tests.integration.probe.otlp import attributes, read_otlp

pytestmark = pytest.mark.integration

SERVER_IDLE_TIMEOUT_S = 1
FREEZE_S = 2.0  # longer than the server's idle timeout
# How the fixtures put the hooks in place before importing the driver: install().
WORKING_HOOKS = "install"


def _driver(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"driver {name} is not installed")


@pytest.fixture
def postgres_env():
    psycopg2 = _driver("psycopg2")
    try:
        psycopg2.connect(POSTGRES_DSN, connect_timeout=2).close()
    except psycopg2.OperationalError as exc:
        unavailable(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    return {"STALE_PG_DSN": POSTGRES_DSN}


@pytest.fixture
def mariadb_env():
    pymysql = _driver("pymysql")
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
    redis = _driver("redis")
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


def function_env(path, extra, *, server_idle_timeout_s=SERVER_IDLE_TIMEOUT_S, hooks=WORKING_HOOKS):
    return {
        "STALE_HOOKS": hooks,
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
        "LIFECYCLE_PROBE_OTLP_FILE": str(path),
        "LIFECYCLE_PROBE_FLUSH": "after-response",  # exported before each freeze
        "STALE_SERVER_IDLE_TIMEOUT_S": str(server_idle_timeout_s),
        **extra,
    }


def invocation_spans(path):
    """(invocation spans by request id, metric points) of an OTLP file."""
    spans, points = read_otlp(path)
    return {s["attrs"]["faas.invocation_id"]: s for s in spans if s["kind"] == 2}, points


def stale_events(span):
    """The attributes of each stale-connection event of an OTLP JSON span."""
    return [attributes(e) for e in span.get("events", []) if e["name"] == STALE_EVENT]


def one_stale_event(span):
    events = stale_events(span)
    assert len(events) == 1, events
    return events[0]


def stale_counts(points):
    """The ``lifecycle.connection.stale`` counter's total per attribute set."""
    counts: dict[tuple[tuple[str, Any], ...], int] = {}
    for point in points:
        if point["metric"] == "lifecycle.connection.stale":
            key = tuple(sorted(point["attrs"].items()))
            counts[key] = counts.get(key, 0) + int(point["asInt"])
    return {key: count for key, count in counts.items() if count}


def assert_stale_event(event, *, db_system, port, outcome):
    assert event["db.system"] == db_system
    assert event["server.address"] == "127.0.0.1"
    assert event["server.port"] == port
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.outcome"] == outcome
    assert FREEZE_S <= event["lifecycle.connection.idle_s"] < 10
    assert event["lifecycle.connection.age_s"] >= event["lifecycle.connection.idle_s"]
    # the socket check saw the server's goodbye before the first byte was sent
    assert event["lifecycle.connection.check"] == "dead"


def assert_one_stale_metric(points, *, db_system, outcome):
    assert stale_counts(points) == {
        (("db.system", db_system), ("lifecycle.connection.outcome", outcome)): 1
    }


def freeze_and_reuse(emulator):
    """Invoke once within the server's timeout, stay frozen past it, invoke again."""
    first = emulator.invoke({})
    emulator.freeze_for(FREEZE_S)
    second = emulator.invoke({})
    emulator.close()  # every runtime process is gone: the file holds all there will be
    assert second.environment == first.environment
    assert (first.cold, second.cold) == (True, False)
    return first, second


def test_postgres_connection_dropped_by_idle_session_timeout_while_frozen_fails(
    local_lambda, probe_handlers, tmp_path, postgres_env
):
    # GIVEN a function whose INIT connection has a 1 s idle_session_timeout
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(
        "stale_pg.handler", probe_handlers, env=function_env(path, postgres_env)
    )
    # WHEN it is used at once, then frozen for 2 s and reused
    first, second = freeze_and_reuse(emulator)
    # THEN the first use worked; the reuse raised the driver's error out of the handler
    assert first.outcome == "ok"
    assert (second.outcome, second.error_type) == ("error", "OperationalError")
    spans, points = invocation_spans(path)
    assert stale_events(spans[first.request_id]) == []
    reused = spans[second.request_id]
    assert reused["attrs"]["lifecycle.outcome"] == "error"
    assert reused["status"]["code"] == 2  # STATUS_CODE_ERROR
    # AND the reuse is reported failed, on the connection made at INIT, idle 2 s+
    event = one_stale_event(reused)
    assert_stale_event(event, db_system="postgresql", port=5432, outcome="failed")
    assert event["error.type"] == "OperationalError"
    assert_one_stale_metric(points, db_system="postgresql", outcome="failed")


@pytest.mark.parametrize(
    "hooks",
    ["install", "probe-only"],
)
def test_an_init_connection_is_tracked_with_install_or_with_probe_imported_first(
    local_lambda, probe_handlers, tmp_path, postgres_env, hooks
):
    # GIVEN the PostgreSQL function with only install(), or only the probe imported,
    # before psycopg2
    path = tmp_path / "otlp.jsonl"
    env = function_env(path, postgres_env, hooks=hooks)
    emulator = local_lambda("stale_pg.handler", probe_handlers, env=env)
    # WHEN its INIT connection is reused after the server dropped it
    _, second = freeze_and_reuse(emulator)
    assert (second.outcome, second.error_type) == ("error", "OperationalError")
    # THEN the failed reuse is reported all the same
    spans, _ = invocation_spans(path)
    event = one_stale_event(spans[second.request_id])
    assert event["lifecycle.connection.outcome"] == "failed"


def test_mariadb_connection_dropped_by_wait_timeout_while_frozen_fails(
    local_lambda, probe_handlers, tmp_path, mariadb_env
):
    # GIVEN a function whose INIT connection has a 1 s wait_timeout
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(
        "stale_mysql.handler", probe_handlers, env=function_env(path, mariadb_env)
    )
    # WHEN it is used at once, then frozen for 2 s and reused
    first, second = freeze_and_reuse(emulator)
    # THEN the handler caught PyMySQL's CR_SERVER_GONE_ERROR and returned
    assert first.outcome == "ok"
    assert "thread_id" in first.response
    assert second.outcome == "ok"
    assert second.response == {"error": "OperationalError", "code": 2006}
    spans, points = invocation_spans(path)
    assert stale_events(spans[first.request_id]) == []
    reused = spans[second.request_id]
    assert reused["attrs"]["lifecycle.outcome"] == "ok"
    # AND the reuse is reported failed, on the connection made at INIT, idle 2 s+
    event = one_stale_event(reused)
    assert_stale_event(event, db_system="mysql", port=3306, outcome="failed")
    assert event["error.type"] == "OperationalError"
    assert_one_stale_metric(points, db_system="mysql", outcome="failed")


def _kill_by_name(admin, name):
    [client] = [c for c in admin.client_list() if c["name"] == name]
    assert admin.client_kill_filter(_id=client["id"]) == 1
    return int(client["id"])


def test_redis_connection_killed_while_frozen_is_detected_and_replaced(
    local_lambda, probe_handlers, tmp_path, redis_env, redis_admin
):
    # GIVEN a function whose client connected at INIT, under a name of its own
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(
        "stale_redis.handler", probe_handlers, env=function_env(path, redis_env)
    )
    first = emulator.invoke({})
    # WHEN the server kills that connection while the environment is frozen (2 s)
    killed_id = _kill_by_name(redis_admin, redis_env["STALE_REDIS_CLIENT_NAME"])
    emulator.freeze_for(FREEZE_S)
    second = emulator.invoke({})
    emulator.close()
    assert second.environment == first.environment
    # THEN redis-py replaced it transparently: both calls worked, on two connections
    assert (first.outcome, second.outcome) == ("ok", "ok")
    assert first.response == {"client_id": killed_id}
    assert second.response["client_id"] != killed_id
    spans, points = invocation_spans(path)
    assert stale_events(spans[first.request_id]) == []
    # AND the reuse is reported detected, with what reconnecting cost
    event = one_stale_event(spans[second.request_id])
    assert_stale_event(event, db_system="redis", port=6379, outcome="detected")
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2
    assert_one_stale_metric(points, db_system="redis", outcome="detected")


@pytest.mark.parametrize(
    ("handler", "env_fixture"),
    [
        ("stale_pg.handler", "postgres_env"),
        ("stale_mysql.handler", "mariadb_env"),
        ("stale_redis.handler", "redis_env"),
    ],
    ids=["postgres", "mariadb", "redis"],
)
def test_an_init_connection_reused_within_its_timeout_is_not_reported(
    local_lambda, probe_handlers, tmp_path, request, handler, env_fixture
):
    # GIVEN a function whose INIT connection the server keeps for 30 s idle (a first
    # invocation's after-response export may take longer than the 1 s of the tests above)
    path = tmp_path / "otlp.jsonl"
    extra = request.getfixturevalue(env_fixture)
    env = function_env(path, extra, server_idle_timeout_s=30)
    emulator = local_lambda(handler, probe_handlers, env=env)
    # WHEN it is invoked twice in a row, reusing the connection across the freeze between
    first, second = emulator.invoke({}), emulator.invoke({})
    emulator.close()
    assert second.environment == first.environment
    assert (first.outcome, second.outcome) == ("ok", "ok")
    assert "error" not in second.response
    assert second.response == first.response  # the same server session
    # THEN nothing is reported stale
    spans, points = invocation_spans(path)
    assert set(spans) == {first.request_id, second.request_id}
    assert all(stale_events(span) == [] for span in spans.values())
    assert stale_counts(points) == {}
