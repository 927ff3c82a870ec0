"""Stale connections made at INIT, reused after a real freeze (SIGSTOP) in the local Lambda.

Each function connects at INIT and gives its session a 1 s server idle timeout
(PostgreSQL ``idle_session_timeout``, MariaDB ``wait_timeout``) or, for Redis, has its
client killed by name from here while it is frozen. The reports are read back from the
OTLP file the runtime process wrote (stale.py). A missing driver or server skips; with
LIFECYCLE_PROBE_REQUIRE_SERVICES=1 it fails (the service fixtures are in conftest.py).
"""

from __future__ import annotations

import pytest

from tests.integration.probe.stale import (
    FREEZE_S,
    assert_one_stale_metric,
    assert_reused_across_two_boundaries,
    assert_stale_event,
    freeze_and_reuse,
    function_env,
    invocation_spans,
    one_stale_event,
    stale_counts,
    stale_events,
)

pytestmark = pytest.mark.integration


@pytest.mark.services  # (its server's fixture is asked for by name, unseen at collection)
@pytest.mark.parametrize(
    ("handler", "env_fixture", "error_type"),
    [
        ("stale_postgres.handler", "postgres_env", "OperationalError"),
        # psycopg 3 raises the server's own error class, an OperationalError subclass
        ("stale_postgres.handler", "psycopg_env", "IdleSessionTimeout"),
    ],
    ids=["psycopg2", "psycopg"],
)
def test_postgres_connection_dropped_by_idle_session_timeout_while_frozen_fails(
    local_lambda, probe_handlers, tmp_path, request, handler, env_fixture, error_type
):
    # GIVEN a function whose INIT connection has a 1 s idle_session_timeout
    path = tmp_path / "otlp.jsonl"
    env = function_env(path, request.getfixturevalue(env_fixture))
    emulator = local_lambda(handler, probe_handlers, env=env)
    # WHEN it is used at once, then frozen for 2 s and reused
    first, second = freeze_and_reuse(emulator)
    # THEN the first use worked; the reuse raised the driver's error out of the handler
    assert first.outcome == "ok"
    assert (second.outcome, second.error_type) == ("error", error_type)
    spans, points = invocation_spans(path)
    assert stale_events(spans[first.request_id]) == []
    reused = spans[second.request_id]
    assert reused["attrs"]["lifecycle.outcome"] == "error"
    assert reused["status"]["code"] == 2  # STATUS_CODE_ERROR
    # AND the reuse is reported failed, on the connection made at INIT, idle 2 s+
    event = one_stale_event(reused)
    assert_stale_event(event, db_system="postgresql", port=5432, outcome="failed")
    assert_reused_across_two_boundaries(event)
    assert event["error.type"] == error_type
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
    emulator = local_lambda("stale_postgres.handler", probe_handlers, env=env)
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


@pytest.mark.services  # (its server's fixture is asked for by name, unseen at collection)
@pytest.mark.parametrize(
    ("handler", "env_fixture"),
    [
        ("stale_postgres.handler", "postgres_env"),
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
