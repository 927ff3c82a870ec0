"""urllib3 pooled keep-alive connections made at INIT and reused after the server dropped them.

The server is a real HTTP/1.1 keep-alive server on 127.0.0.1 whose handler closes a
connection idle longer than its timeout (a load balancer's idle cut-off), or closes one
right after reading a request, before answering it (a drop no check can see): see
keepalive_server.py.
"""

from __future__ import annotations

import http.client
import select
import time

import pytest
import urllib3

from lifecycle_probe.connections import _urllib3
from lifecycle_probe.emulator.keepalive import Server
from tests.functional.connections.support import freezes_since_init

SECRET = "s3cret-token"


@pytest.fixture
def tracked(tracking):
    _urllib3.patch(urllib3)
    return tracking


@pytest.fixture
def servers(tracked):
    started: list[Server] = []
    pools: list[urllib3.HTTPConnectionPool | urllib3.PoolManager] = []

    def start(idle_timeout_s: float = 5.0) -> Server:
        server = Server(idle_timeout_s)
        started.append(server)
        return server

    start.pools = pools  # type: ignore[attr-defined]
    yield start
    for pool in pools:  # the server's handlers see EOF and end
        pool.clear() if isinstance(pool, urllib3.PoolManager) else pool.close()
    for server in started:
        server.stop()


def open_pool(servers, server: Server, **kwargs) -> urllib3.HTTPConnectionPool:
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=1, timeout=2, **kwargs)
    servers.pools.append(pool)
    return pool


def wait_until_closed_by_server(pool: urllib3.HTTPConnectionPool, limit_s: float = 3.0) -> None:
    """Wait (bounded) until the pooled idle connection's socket shows the server's FIN."""
    [conn] = [c for c in list(pool.pool.queue) if c is not None]  # type: ignore[union-attr]
    readable, _, _ = select.select([conn.sock], [], [], limit_s)
    assert readable, "the server did not close the idle connection"


def lifecycle_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("lifecycle_probe") and "stale connection" in r.getMessage()
    ]


def test_an_idle_connection_the_server_closed_is_detected_and_replaced(
    servers, function, warnings_logged
):
    # GIVEN a pool made at INIT whose keep-alive connection, used at INIT with a secret in
    # its query string and headers, the server closes after 0.2 s idle
    server = servers(idle_timeout_s=0.2)
    pool = open_pool(servers, server)
    headers = {"Authorization": f"Bearer {SECRET}"}
    assert pool.request("GET", f"/path?token={SECRET}", headers=headers).data == b"ok"
    last_use = time.time()
    wait_until_closed_by_server(pool)
    idle_s = time.time() - last_use

    # WHEN the first invocation requests again: urllib3 sees the drop and reconnects
    response = function.invoke(
        lambda: pool.request("POST", f"/path?token={SECRET}", body=SECRET, headers=headers)
    )

    # THEN it worked, and the reuse is detected, with what reconnecting cost
    assert response.status == 200
    assert response.data == b"ok"
    assert server.accepted == 2
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "detected"
    assert event["lifecycle.connection.check"] == "dead"
    assert event["server.address"] == "127.0.0.1"
    assert event["server.port"] == server.port
    assert event.get("db.system") is None
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.freezes"] == freezes_since_init(function, 1)
    assert event["lifecycle.connection.idle_s"] == pytest.approx(idle_s, abs=0.3)
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2
    assert "error.type" not in event
    [line] = lifecycle_lines(warnings_logged)
    assert "urllib3" in line
    assert f"127.0.0.1:{server.port}" in line
    assert "replaced" in line
    # Host and port only: no path, query string, header or body.
    text = repr(function.stale_events()) + "\n".join(lifecycle_lines(warnings_logged))
    for leak in (SECRET, "token", "/path", "Bearer"):
        assert leak not in text


def test_a_connection_made_in_an_invocation_and_dropped_is_detected_in_the_next(servers, function):
    # GIVEN a PoolManager (as requests and botocore use) made at INIT, first used in the
    # first invocation
    server = servers(idle_timeout_s=0.2)
    manager = urllib3.PoolManager(maxsize=1, timeout=2)
    servers.pools.append(manager)
    url = f"http://127.0.0.1:{server.port}/"
    assert function.invoke(lambda: manager.request("GET", url).status) == 200
    assert function.stale_events() == []
    wait_until_closed_by_server(manager.connection_from_host("127.0.0.1", server.port))

    # WHEN the second invocation requests again
    assert function.invoke(lambda: manager.request("GET", url).status) == 200

    # THEN the reuse is detected, made in the first invocation
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "detected"
    assert event["lifecycle.connection.check"] == "dead"
    assert event["lifecycle.connection.created_in"] == "invocation:1"
    assert event["lifecycle.connection.uses"] == 2
    assert server.accepted == 2


def test_a_drop_seen_only_by_the_request_is_retried_by_urllib3_and_detected(servers, function):
    # GIVEN a connection made at INIT that looks alive, but the server closes it right
    # after reading the next request, without answering
    server = servers()
    pool = open_pool(servers, server)
    assert pool.request("GET", "/").status == 200
    server.drop_next = 1

    # WHEN the first invocation GETs (idempotent: urllib3's default Retry retries it)
    response = function.invoke(lambda: pool.request("GET", "/"))

    # THEN urllib3 retried on a new connection and the caller saw nothing: the pool
    # quietly replaced the connection, so the reuse is detected (the check saw it alive)
    assert response.status == 200
    assert server.accepted == 2
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "detected"
    assert event["lifecycle.connection.check"] == "alive"
    assert event["lifecycle.connection.created_in"] == "init"
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2
    assert "error.type" not in event


@pytest.mark.parametrize(
    ("method", "retries"),
    [("POST", None), ("GET", False)],
    ids=["post-is-not-retried", "retries-false-as-botocore"],
)
def test_a_drop_seen_only_by_an_unretried_request_fails_with_the_error_unchanged(
    servers, function, warnings_logged, method, retries
):
    # GIVEN a connection made at INIT that the server closes after reading the next request
    server = servers()
    pool = open_pool(servers, server)
    assert pool.request("GET", "/").status == 200
    server.drop_next = 1

    # WHEN the first invocation sends a request urllib3 does not retry
    with pytest.raises(urllib3.exceptions.ProtocolError) as raised:
        function.invoke(lambda: pool.urlopen(method, "/", body=b"x", retries=retries))

    # THEN urllib3's own error reaches the caller, and the reuse failed
    assert raised.value.args[0] == "Connection aborted."
    assert type(raised.value.args[1]) is http.client.RemoteDisconnected
    assert server.accepted == 1
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "failed"
    assert event["error.type"] == "RemoteDisconnected"
    assert event["lifecycle.connection.check"] == "alive"
    assert event["lifecycle.connection.created_in"] == "init"
    assert "lifecycle.connection.reconnect_s" not in event
    [line] = lifecycle_lines(warnings_logged)
    assert "failed on reuse" in line


def test_a_drop_the_retries_cannot_mend_fails_with_max_retry_error(servers, function):
    # GIVEN a connection made at INIT, and a server that drops two requests in a row
    server = servers()
    pool = open_pool(servers, server)
    assert pool.request("GET", "/").status == 200
    server.drop_next = 2

    # WHEN the first invocation GETs with a single retry
    with pytest.raises(urllib3.exceptions.MaxRetryError) as raised:
        function.invoke(lambda: pool.request("GET", "/", retries=1))

    # THEN the retry's new connection failed too: the reuse failed, with the connection's
    # own error, and what the retry's reconnect cost
    assert isinstance(raised.value.reason, urllib3.exceptions.ProtocolError)
    assert server.accepted == 2
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "failed"
    assert event["error.type"] == "RemoteDisconnected"
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2


def test_a_connection_reused_within_the_servers_timeout_is_not_reported(
    servers, function, warnings_logged
):
    server = servers(idle_timeout_s=5.0)
    pool = open_pool(servers, server)
    assert pool.request("GET", "/").status == 200
    time.sleep(0.2)
    assert function.invoke(lambda: pool.request("GET", "/").status) == 200
    assert function.invoke(lambda: pool.request("GET", "/").status) == 200
    assert function.stale_events(0) == []
    assert function.stale_events(1) == []
    assert server.accepted == 1
    assert lifecycle_lines(warnings_logged) == []


def test_a_connection_closed_by_a_connection_close_reply_is_new_when_reopened(servers, function):
    # GIVEN a reply at INIT that closed its connection (the pool keeps the closed object)
    server = servers(idle_timeout_s=5.0)
    pool = open_pool(servers, server)
    assert pool.request("GET", "/close").status == 200

    # WHEN the first invocation requests: the object connects again, as a new connection
    assert function.invoke(lambda: pool.request("GET", "/").status) == 200

    # THEN nothing was reused
    assert function.stale_events() == []
    assert server.accepted == 2


def test_a_live_connection_idle_longer_than_the_threshold_is_a_risk(servers, tracked, function):
    tracked(0.2)
    server = servers(idle_timeout_s=5.0)
    pool = open_pool(servers, server)
    assert pool.request("GET", "/").status == 200
    time.sleep(0.4)
    assert function.invoke(lambda: pool.request("GET", "/").status) == 200
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "risk"
    assert event["lifecycle.connection.check"] == "alive"
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.idle_s"] >= 0.4
    assert "lifecycle.connection.reconnect_s" not in event
    assert server.accepted == 1


def test_patch_is_idempotent(servers, function):
    _urllib3.patch(urllib3)  # a second time (the post-import hook may run it again)
    server = servers(idle_timeout_s=0.2)
    pool = open_pool(servers, server)
    assert pool.request("GET", "/").status == 200
    wait_until_closed_by_server(pool)
    assert function.invoke(lambda: pool.request("GET", "/").status) == 200
    assert len(function.stale_events()) == 1


def test_an_http_connection_event_carries_no_db_system(servers, function):
    server = servers(idle_timeout_s=0.2)
    pool = open_pool(servers, server)
    assert pool.request("GET", "/").status == 200
    wait_until_closed_by_server(pool)
    assert function.invoke(lambda: pool.request("GET", "/").status) == 200
    [event] = function.stale_events()
    assert "db.system" not in event


def test_a_connection_to_another_server_is_not_taken_for_a_replacement(servers):
    # GIVEN a reuse of a connection to server A that failed and waits for a retry
    from lifecycle_probe.connections.tracking import ConnectionState, begin_reuse
    from lifecycle_probe.testing import fresh_environment

    a, b = servers(), servers()
    waiting = ConnectionState("urllib3", None, "127.0.0.1", a.port)
    fresh_environment()  # a boundary since its last use
    begin_reuse(waiting, None)
    _urllib3._pending().append((waiting, time.perf_counter_ns()))
    assert waiting.reuse is not None
    try:
        # WHEN a connection to server B is made meanwhile (a credential refresh, a hook)
        other = urllib3.connection.HTTPConnection("127.0.0.1", b.port, timeout=2)
        other.connect()
        other.close()
        # THEN it replaces nothing; the retry's own connection to A does
        assert waiting.reuse.reconnect_ns == 0
        retry = urllib3.connection.HTTPConnection("127.0.0.1", a.port, timeout=2)
        retry.connect()
        retry.close()
        assert waiting.reuse.reconnect_ns > 0
    finally:
        _urllib3._pending().clear()


@pytest.mark.parametrize(("exporter", "lines"), [("none", 0), ("console", 1)])
def test_exporter_none_writes_no_stale_connection_line(
    servers, tracked, warnings_logged, capsys, exporter, lines
):
    # GIVEN every reuse after a boundary a risk, and a handler exporting to ``exporter``
    # (no capture_records: no process sink takes its records either)
    from lifecycle_probe import current, probe
    from lifecycle_probe.environment import current_environment
    from lifecycle_probe.testing import FakeContext

    tracked(0)
    server = servers()
    pool = open_pool(servers, server)

    @probe(exporter=exporter)
    def handler(event, context):
        return pool.request("GET", "/").status, current().invocation_seq

    # WHEN the connection made in the first invocation is reused, and works, in the second
    results = [handler({}, FakeContext()) for _ in range(2)]

    # THEN ``none`` writes nothing at all and leaves no event behind; an exporter gets its
    # line (the yardstick)
    assert results == [(200, 1), (200, 2)]
    assert len(lifecycle_lines(warnings_logged)) == lines
    if exporter == "none":
        assert current_environment().events == []
    else:
        assert "was reused and worked" in lifecycle_lines(warnings_logged)[0]
    capsys.readouterr()  # (the console sink's JSON lines)
