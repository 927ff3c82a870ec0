"""boto3/botocore keep-alive connections made at INIT whose next request the server drops.

botocore passes ``retries=False`` to urllib3 and retries above it, on a new connection.
The server (keepalive_server.py) keeps idle connections open but reads a request that
comes on a connection idle longer than ``DROP_IDLE_S`` and closes it without a reply: a
drop urllib3's check of the idle socket cannot see. Whether the reuse ``failed`` is
decided by what reaches the caller, after botocore's retries.
"""

from __future__ import annotations

import http.client
import importlib
import time
import types

import pytest

from lifecycle_probe.connections import _botocore, _urllib3
from lifecycle_probe.emulator.keepalive import Server
from tests.functional.connections.support import freezes_since_init
from tests.services import unavailable

# Just enough of DynamoDB's JSON protocol for ListTables.
EMPTY_TABLE_LIST = b'{"TableNames": []}'
AMZ_JSON = "application/x-amz-json-1.0"
DROP_IDLE_S = 0.2
SECRET_KEY = "local-test-secret"


@pytest.fixture
def boto3(tracking, tmp_path, monkeypatch):
    # No profile, config file, credentials, retry setting or endpoint of the developer's;
    # no instance metadata lookup.
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_RETRY_MODE",
        "AWS_MAX_ATTEMPTS",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    try:
        boto3 = importlib.import_module("boto3")
        botocore = importlib.import_module("botocore")
        urllib3 = importlib.import_module("urllib3")
    except ImportError as exc:
        unavailable(f"boto3 is not installed: {exc}")
    _urllib3.patch(urllib3)
    _botocore.patch(botocore)  # patches botocore.endpoint now, or when it is imported
    return boto3


@pytest.fixture
def servers(boto3):
    started: list[Server] = []

    def start(**kwargs) -> Server:
        server = Server(5.0, body=EMPTY_TABLE_LIST, content_type=AMZ_JSON, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def dynamodb(boto3):
    """Makes DynamoDB clients with one pooled connection, closed at teardown."""
    clients = []

    def make(server: Server, total_max_attempts: int, mode: str = "standard"):
        botocore_config = importlib.import_module("botocore.config")
        client = boto3.session.Session(
            aws_access_key_id="AKIDLOCALTESTONLY",
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        ).client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{server.port}",
            config=botocore_config.Config(
                connect_timeout=2,
                read_timeout=2,
                max_pool_connections=1,
                retries={"mode": mode, "total_max_attempts": total_max_attempts},
            ),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:  # the server's handlers see EOF and end
        client.close()


def connection_of(reply) -> int:
    """The server's number of the connection that carried the request."""
    return int(reply["ResponseMetadata"]["HTTPHeaders"]["x-connection"])


def made_at_init_and_left_idle(client) -> None:
    """Open the client's pooled connection at INIT, then leave it idle past DROP_IDLE_S."""
    assert connection_of(client.list_tables()) == 1
    time.sleep(DROP_IDLE_S + 0.2)


def lifecycle_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("lifecycle_probe") and "stale connection" in r.getMessage()
    ]


@pytest.mark.parametrize("mode", ["standard", "legacy"])
def test_a_drop_botocore_retries_on_a_new_connection_is_detected_and_replaced(
    servers, dynamodb, function, warnings_logged, mode
):
    # GIVEN a DynamoDB client made at INIT, allowed a second attempt, whose keep-alive
    # connection looks alive but whose next request the server reads and drops
    server = servers(drop_idle_s=DROP_IDLE_S)
    client = dynamodb(server, total_max_attempts=2, mode=mode)
    made_at_init_and_left_idle(client)

    # WHEN the first invocation lists the tables
    reply = function.invoke(client.list_tables)

    # THEN botocore retried on a new connection and the call succeeded
    assert reply["TableNames"] == []
    assert reply["ResponseMetadata"]["RetryAttempts"] == 1
    assert connection_of(reply) == 2
    assert (server.accepted, server.dropped) == (2, 1)
    # AND the reuse is detected (the check saw it alive), with what reconnecting cost
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "detected"
    assert event["lifecycle.connection.check"] == "alive"
    assert event["server.address"] == "127.0.0.1"
    assert event["server.port"] == server.port
    assert "db.system" not in event
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.freezes"] == freezes_since_init(function, 1)
    assert event["lifecycle.connection.idle_s"] >= DROP_IDLE_S
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2
    assert "error.type" not in event
    [line] = lifecycle_lines(warnings_logged)
    assert "replaced" in line
    assert f"127.0.0.1:{server.port}" in line
    assert SECRET_KEY not in repr(event) + line


@pytest.mark.parametrize("mode", ["standard", "legacy"])
def test_a_drop_botocore_does_not_retry_reaches_the_caller_and_failed(
    servers, dynamodb, function, warnings_logged, mode
):
    # GIVEN the same client and drop, with botocore's retries off (a single attempt)
    botocore_exceptions = importlib.import_module("botocore.exceptions")
    urllib3_exceptions = importlib.import_module("urllib3.exceptions")
    server = servers(drop_idle_s=DROP_IDLE_S)
    client = dynamodb(server, total_max_attempts=1, mode=mode)
    made_at_init_and_left_idle(client)

    # WHEN the first invocation lists the tables
    with pytest.raises(botocore_exceptions.ConnectionClosedError) as raised:
        function.invoke(client.list_tables)

    # THEN botocore's own error, wrapping urllib3's, reaches the caller
    assert isinstance(raised.value.kwargs["error"], urllib3_exceptions.ProtocolError)
    assert (server.accepted, server.dropped) == (1, 1)
    # AND the reuse failed, with the connection's own error
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "failed"
    assert event["error.type"] == http.client.RemoteDisconnected.__qualname__
    assert event["lifecycle.connection.check"] == "alive"
    assert event["lifecycle.connection.created_in"] == "init"
    assert "lifecycle.connection.reconnect_s" not in event
    [line] = lifecycle_lines(warnings_logged)
    assert "failed on reuse" in line


def test_a_drop_botocores_retries_cannot_mend_failed_with_what_reconnecting_cost(
    servers, dynamodb, function
):
    # GIVEN a client made at INIT allowed two attempts, and a server that drops the next
    # two requests, whatever their connection
    server = servers()
    client = dynamodb(server, total_max_attempts=2)
    assert connection_of(client.list_tables()) == 1
    server.drop_next = 2

    # WHEN the first invocation lists the tables
    botocore_exceptions = importlib.import_module("botocore.exceptions")
    with pytest.raises(botocore_exceptions.ConnectionClosedError):
        function.invoke(client.list_tables)

    # THEN both attempts failed, the retry on a new connection: the reuse failed, with
    # the connection's own error and what the retry's reconnect cost
    assert (server.accepted, server.dropped) == (2, 2)
    [event] = function.stale_events()
    assert event["lifecycle.connection.outcome"] == "failed"
    assert event["error.type"] == "RemoteDisconnected"
    assert 0 < event["lifecycle.connection.reconnect_s"] < 2


def test_a_connection_reused_within_the_servers_patience_is_not_reported(
    servers, dynamodb, function
):
    # GIVEN a client made at INIT whose connection the server drops after 5 s idle only
    server = servers(drop_idle_s=5.0)
    client = dynamodb(server, total_max_attempts=2)
    assert connection_of(client.list_tables()) == 1

    # WHEN two invocations list the tables at once
    first = function.invoke(client.list_tables)
    second = function.invoke(client.list_tables)

    # THEN both went over the INIT connection, with no retry and nothing reported
    assert (connection_of(first), connection_of(second)) == (1, 1)
    assert second["ResponseMetadata"]["RetryAttempts"] == 0
    assert function.stale_events(0) == []
    assert function.stale_events(1) == []
    assert (server.accepted, server.dropped) == (1, 0)


def test_a_botocore_without_the_retry_loop_is_left_alone_with_one_warning(boto3, warnings_logged):
    # GIVEN a botocore.endpoint whose Endpoint has no _send_request
    endpoint = types.ModuleType("botocore.endpoint")

    class Endpoint:
        def make_request(self) -> str:
            return "sent"

    endpoint.Endpoint = Endpoint  # type: ignore[attr-defined]

    # WHEN it is patched
    _botocore._patch_endpoint(endpoint)

    # THEN nothing is wrapped, and one warning says what is lost
    assert Endpoint().make_request() == "sent"
    assert not hasattr(Endpoint, "_lifecycle_probe_tracked")
    [record] = [r for r in warnings_logged.records if "_send_request" in r.getMessage()]
    assert "failed, not detected" in record.getMessage()
