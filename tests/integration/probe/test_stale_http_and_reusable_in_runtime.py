"""Keep-alive HTTP and the ``reusable`` helper, reused after a real freeze (SIGSTOP).

urllib3 and boto3 keep-alive connections to a server run here that closes connections
idle for 1 s, boto3's to one that drops a request on a connection idle for 1 s (botocore's
retry replaces it, or the error reaches the handler), and a psycopg2 connection kept by
the ``reusable`` helper; and, within the servers' timeouts, psycopg 3, HTTP and
``reusable`` reuse that reports nothing. The reports are read back from the OTLP file the
runtime process wrote (stale.py). A missing driver or server skips; with
LIFECYCLE_PROBE_REQUIRE_SERVICES=1 it fails.
"""

from __future__ import annotations

import pytest

from lifecycle_probe.emulator.keepalive import Server
from tests.emf_spec import emf_problems, json_lines, metric_values
from tests.integration.probe.stale import (
    FREEZE_S,
    SERVER_IDLE_TIMEOUT_S,
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
from tests.services import require_module

pytestmark = pytest.mark.integration

# Just enough of DynamoDB's JSON protocol for ListTables; urllib3 takes it as any body.
EMPTY_TABLE_LIST = b'{"TableNames": []}'
AMZ_JSON = "application/x-amz-json-1.0"


@pytest.fixture
def server_idle_timeout_s():
    """How long the servers keep an idle session; parametrize overrides it."""
    return SERVER_IDLE_TIMEOUT_S


@pytest.fixture
def server_drop_idle_s() -> float | None:
    """Idle time after which the server drops a connection's next request; None: never."""
    return None


@pytest.fixture
def keepalive_server(server_idle_timeout_s, server_drop_idle_s):
    """An HTTP/1.1 keep-alive server on 127.0.0.1, in this process, answering ListTables."""
    server = Server(
        server_idle_timeout_s,
        body=EMPTY_TABLE_LIST,
        content_type=AMZ_JSON,
        drop_idle_s=server_drop_idle_s,
    )
    yield server
    server.stop()


@pytest.fixture
def urllib3_env(keepalive_server):
    require_module("urllib3")
    return {"STALE_HTTP_URL": f"http://127.0.0.1:{keepalive_server.port}/"}


@pytest.fixture
def boto3_env(urllib3_env, tmp_path, monkeypatch):
    require_module("boto3")
    # The runtime inherits this process's variables: no profile of the developer's.
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_PROFILE", raising=False)
    return {
        **urllib3_env,
        "AWS_ACCESS_KEY_ID": "AKIDLOCALTESTONLY",
        "AWS_SECRET_ACCESS_KEY": "local-test-secret",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }


@pytest.mark.parametrize(
    ("handler", "env_fixture", "reply"),
    [
        ("stale_http.handler", "urllib3_env", {"status": 200}),
        ("stale_boto3.handler", "boto3_env", {"tables": []}),
    ],
    ids=["urllib3", "boto3"],
)
def test_http_keep_alive_connection_closed_while_frozen_is_detected_and_replaced(
    local_lambda, probe_handlers, tmp_path, request, keepalive_server, handler, env_fixture, reply
):
    # GIVEN a function whose pool opened a keep-alive connection at INIT, to a server
    # that closes connections idle for 1 s
    path = tmp_path / "otlp.jsonl"
    extra = request.getfixturevalue(env_fixture)
    emulator = local_lambda(handler, probe_handlers, env=function_env(path, extra))
    # WHEN it is used at once, then frozen for 2 s (the server closes it) and reused
    first, second = freeze_and_reuse(emulator)
    # THEN urllib3 replaced it quietly: both requests worked, the first on the INIT
    # connection (the server's first), the second on a new one
    assert (first.outcome, second.outcome) == ("ok", "ok")
    assert first.response == {**reply, "connection": 1}
    assert second.response == {**reply, "connection": 2}
    assert keepalive_server.accepted == 2
    spans, points = invocation_spans(path)
    assert stale_events(spans[first.request_id]) == []
    # AND the reuse is reported detected, by the server's address and port (no
    # db.system), with what reconnecting cost
    event = one_stale_event(spans[second.request_id])
    assert_stale_event(event, db_system=None, port=keepalive_server.port, outcome="detected")
    assert_reused_across_two_boundaries(event)
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2
    assert "error.type" not in event
    assert_one_stale_metric(points, db_system=None, outcome="detected")


# A server that keeps idle connections open, but drops a request on one idle for over 1 s.
DROPPING_SERVER_IDLE_TIMEOUT_S = 30
dropping_server = pytest.mark.parametrize(
    ("server_idle_timeout_s", "server_drop_idle_s"),
    [(DROPPING_SERVER_IDLE_TIMEOUT_S, SERVER_IDLE_TIMEOUT_S)],
    ids=["drops-after-1s-idle"],
)


def reuse_dropped_after_a_freeze(local_lambda, probe_handlers, tmp_path, server, env, attempts):
    """Run stale_boto3 with ``attempts`` attempts a call, freeze past the server's patience
    and reuse: (the second invocation, its stale event, the metric points)."""
    path = tmp_path / "otlp.jsonl"
    extra = {**env, "STALE_BOTO3_ATTEMPTS": str(attempts)}
    variables = function_env(path, extra, server_idle_timeout_s=DROPPING_SERVER_IDLE_TIMEOUT_S)
    emulator = local_lambda("stale_boto3.handler", probe_handlers, env=variables)
    first, second = freeze_and_reuse(emulator)
    assert first.outcome == "ok"
    assert first.response == {"tables": [], "connection": 1}
    assert server.dropped == 1
    spans, points = invocation_spans(path)
    assert stale_events(spans[first.request_id]) == []
    event = one_stale_event(spans[second.request_id])
    assert "db.system" not in event
    assert event["server.address"] == "127.0.0.1"
    assert event["server.port"] == server.port
    assert event["lifecycle.connection.created_in"] == "init"
    assert FREEZE_S <= event["lifecycle.connection.idle_s"] < 10
    # the socket looked alive: the server closed it only once it had read the request
    assert event["lifecycle.connection.check"] == "alive"
    assert_reused_across_two_boundaries(event)
    return second, event, points


@dropping_server
def test_a_boto3_request_dropped_after_a_freeze_and_retried_by_botocore_is_detected(
    local_lambda, probe_handlers, tmp_path, keepalive_server, boto3_env
):
    # GIVEN a function whose boto3 client, allowed two attempts a call, opened a
    # keep-alive connection at INIT, to a server that keeps idle connections for 30 s but
    # reads a request on one idle for over 1 s and closes it without a reply
    # WHEN it is used at once, then frozen for 2 s and reused: that request is dropped
    second, event, points = reuse_dropped_after_a_freeze(
        local_lambda, probe_handlers, tmp_path, keepalive_server, boto3_env, attempts=2
    )
    # THEN botocore retried on a new connection and the handler saw nothing
    assert second.outcome == "ok"
    assert second.response == {"tables": [], "connection": 2}
    assert keepalive_server.accepted == 2
    # AND the reuse is reported detected, with what reconnecting cost
    assert event["lifecycle.connection.outcome"] == "detected"
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2
    assert "error.type" not in event
    assert_one_stale_metric(points, db_system=None, outcome="detected")


@dropping_server
def test_a_boto3_request_dropped_after_a_freeze_that_botocore_does_not_retry_failed(
    local_lambda, probe_handlers, tmp_path, keepalive_server, boto3_env
):
    # GIVEN the same function and server, the client allowed a single attempt a call
    # WHEN it is used at once, then frozen for 2 s and reused: that request is dropped
    second, event, points = reuse_dropped_after_a_freeze(
        local_lambda, probe_handlers, tmp_path, keepalive_server, boto3_env, attempts=1
    )
    # THEN botocore's error reached the handler
    assert (second.outcome, second.error_type) == ("error", "ConnectionClosedError")
    assert keepalive_server.accepted == 1
    # AND the reuse is reported failed, with the connection's own error
    assert event["lifecycle.connection.outcome"] == "failed"
    assert event["error.type"] == "RemoteDisconnected"
    assert "lifecycle.connection.reconnect_s" not in event
    assert_one_stale_metric(points, db_system=None, outcome="failed")


def test_a_reusable_connection_dropped_while_frozen_is_replaced_transparently_and_detected(
    local_lambda, probe_handlers, tmp_path, postgres_env
):
    # GIVEN a function that gets its psycopg2 connection from reusable(), made at INIT
    # with a 1 s idle_session_timeout
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(
        "stale_reusable.handler", probe_handlers, env=function_env(path, postgres_env)
    )
    # WHEN it is used at once, then frozen for 2 s (the server ends the session) and reused
    first, second = freeze_and_reuse(emulator)
    # THEN the helper found it dead and made a new one: both invocations worked, the
    # second in a new server session
    assert (first.outcome, second.outcome) == ("ok", "ok")
    assert first.response["reconnects"] == 0
    assert second.response["reconnects"] == 1
    assert second.response["backend_pid"] != first.response["backend_pid"]
    spans, points = invocation_spans(path)
    assert stale_events(spans[first.request_id]) == []
    # AND the reuse is reported once, detected, on the connection made at INIT, with
    # what reconnecting cost (the dead connection, closed unused, reports nothing more)
    event = one_stale_event(spans[second.request_id])
    assert_stale_event(event, db_system="postgresql", port=5432, outcome="detected")
    # the same count of freezes as connection tracking gives: the one between the first
    # invocation and the second (a cold start's INIT went straight on to the first)
    assert event["lifecycle.connection.freezes"] == 1
    # and its hand-outs: at INIT, in the first invocation, and this reuse
    assert event["lifecycle.connection.uses"] == 3
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2
    assert "error.type" not in event
    assert_one_stale_metric(points, db_system="postgresql", outcome="detected")


@pytest.mark.parametrize("server_idle_timeout_s", [30])
@pytest.mark.parametrize(
    ("handler", "env_fixture"),
    [
        # (the server's fixture is asked for by name, unseen at collection: marked here)
        pytest.param("stale_postgres.handler", "psycopg_env", marks=pytest.mark.services),
        ("stale_http.handler", "urllib3_env"),
        ("stale_boto3.handler", "boto3_env"),
        pytest.param("stale_reusable.handler", "postgres_env", marks=pytest.mark.services),
    ],
    ids=["psycopg", "urllib3", "boto3", "reusable"],
)
def test_an_init_connection_reused_within_its_timeout_is_not_reported(
    local_lambda, probe_handlers, tmp_path, request, handler, env_fixture, server_idle_timeout_s
):
    # GIVEN a function whose INIT connection the server keeps for 30 s idle (a first
    # invocation's after-response export may take longer than the 1 s of the tests above)
    path = tmp_path / "otlp.jsonl"
    extra = request.getfixturevalue(env_fixture)
    env = function_env(path, extra, server_idle_timeout_s=server_idle_timeout_s)
    emulator = local_lambda(handler, probe_handlers, env=env)
    # WHEN it is invoked twice in a row, reusing the connection across the freeze between
    first, second = emulator.invoke({}), emulator.invoke({})
    emulator.close()
    assert second.environment == first.environment
    assert (first.outcome, second.outcome) == ("ok", "ok")
    # the same server session, or HTTP connection (and no reconnect by the helper)
    assert second.response == first.response
    # THEN nothing is reported stale
    spans, points = invocation_spans(path)
    assert set(spans) == {first.request_id, second.request_id}
    assert all(stale_events(span) == [] for span in spans.values())
    assert stale_counts(points) == {}


def test_stale_connection_in_emf_and_one_json_log_line(
    local_lambda, probe_handlers, tmp_path, keepalive_server, urllib3_env
):
    # GIVEN the urllib3 function with the default exporter (EMF) and JSON logs
    env = function_env(tmp_path / "unused.jsonl", urllib3_env)
    env.update({"LIFECYCLE_PROBE_EXPORTER": "emf", "AWS_LAMBDA_LOG_FORMAT": "JSON"})
    emulator = local_lambda("stale_http.handler", probe_handlers, env=env, log_dir=tmp_path)
    # WHEN its keep-alive connection is dropped while the environment is frozen
    _first, second = freeze_and_reuse(emulator)
    lines = json_lines(emulator.logs(second.environment))
    # THEN the second invocation's EMF counts one detected stale connection
    (document,) = [
        d for d in lines if "_aws" in d and d.get("function_request_id") == second.request_id
    ]
    assert emf_problems(document) == []
    assert metric_values(document)["StaleConnectionDetected"] == [1.0]
    assert "StaleConnectionFailed" not in metric_values(document)
    # and one JSON warning line says so, joined to the invocation, with no URL path or DSN
    (line,) = [d for d in lines if d.get("lifecycle_probe") == "stale_connection"]
    assert line["level"] == "WARNING"
    assert line["function_request_id"] == line["requestId"] == second.request_id
    assert line["lifecycle_invocation_seq"] == 2
    assert line["cold_start"] is False
    assert line["connection_outcome"] == "detected"
    assert line["connection_client"] == "urllib3"
    assert line["server_port"] == keepalive_server.port
    assert line["connection_created_in"] == "init"
    assert line["function_arn"].endswith(":function:lifecycle-demo")
    assert line["service"] == "service_undefined"
    assert line["connection_idle_s"] >= 1.0
    assert "stale connection (detected): urllib3 connection to 127.0.0.1" in line["message"]
