"""No secret reaches telemetry or the probe's log lines: events, DSNs, URLs, exception
messages and source lines that carry one go through every sink and every line, and the
secret appears nowhere (issue 11)."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from lifecycle_probe import loglines, probe
from lifecycle_probe.testing import FakeContext, fresh_environment
from tests.services import POSTGRES_DSN, require_module, unavailable

SECRET = "S3cr3t-Pa55-7f1d"  # the secret the test hunts for


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def psycopg2():
    # Imported by name: the driver ships no type information. Missing, it skips the test
    # (fails it under LIFECYCLE_PROBE_REQUIRE_SERVICES=1).
    return require_module("psycopg2")


def connect_with_secret():
    driver = psycopg2()

    # trust authentication: the password is sent along, and ignored by the server
    dsn = POSTGRES_DSN.replace("user=postgres", f"user=postgres password={SECRET}")
    try:
        return driver.connect(dsn)
    except driver.OperationalError as exc:
        unavailable(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
        raise


def terminate(connection) -> None:
    """End the connection's server session, and return once its process is gone (its
    socket closed with it), so that the next use of ``connection`` fails."""
    killer = psycopg2().connect(POSTGRES_DSN)
    killer.autocommit = True
    pid = connection.get_backend_pid()
    deadline = time.monotonic() + 10
    with killer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
        while True:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            if cursor.fetchone() == (0,):
                break
            assert time.monotonic() < deadline, f"backend {pid} still there after 10 s"
            time.sleep(0.01)
    killer.close()


@pytest.mark.services
@pytest.mark.parametrize("log_format", ["Text", "JSON"])
def test_no_secret_anywhere(tmp_path, monkeypatch, capsys, caplog, log_format):
    # GIVEN every exporter at once, a collector whose URL carries an API key (and refuses),
    # and the function's logs in text or JSON
    monkeypatch.setenv("AWS_LAMBDA_LOG_FORMAT", log_format)
    monkeypatch.setattr(loglines, "_powertools_logger_service", None)
    endpoint = f"http://user:{SECRET}@127.0.0.1:{closed_port()}/v1?api_key={SECRET}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {SECRET}")
    otlp = tmp_path / "otlp.jsonl"
    fresh_environment()
    caplog.set_level(logging.DEBUG)
    # a connection made at INIT with its password in the DSN, dropped before its reuse
    connection = connect_with_secret()
    handler = probe(
        exporter="otlp,otlp-file,emf,console",
        otlp_file=str(otlp),
        flush="sync",
        flush_timeout_ms=500,
        stale_idle_s=0,
    )(uses_and_fails)
    terminate(connection)
    event = {
        "body": f'{{"password": "{SECRET}"}}',
        "headers": {"Authorization": f"Bearer {SECRET}", "traceparent": SECRET, "x": SECRET},
        "queryStringParameters": {"token": SECRET},
        "requestContext": {"http": {"method": "POST", "path": f"/login/{SECRET}"}},
    }
    # WHEN the handler fails on the stale connection, then raises with the DSN in its
    # message and its source line, then returns a value holding the secret
    with pytest.raises(psycopg2().OperationalError):
        handler({**event, "step": "query", "connection": connection}, FakeContext())
    with pytest.raises(ConnectionError, match=SECRET):
        handler({**event, "step": "raise"}, FakeContext())
    assert handler({**event, "step": "return"}, FakeContext()) == {"echo": SECRET}
    # THEN the secret is nowhere in what the probe wrote: stdout, stderr, its log records,
    # the OTLP file
    captured = capsys.readouterr()
    written = {
        "stdout": captured.out,
        "stderr": captured.err,
        "logs": "\n".join(
            r.getMessage()
            for r in caplog.records
            if r.name.startswith(("lifecycle_probe", "opentelemetry"))
        ),
        "otlp": otlp.read_text() if otlp.exists() else "",
    }
    assert {where: SECRET in text for where, text in written.items()} == dict.fromkeys(
        written, False
    )
    # and the probe did write: spans in the file, EMF and a stale-connection line
    assert '"resourceSpans"' in written["otlp"]
    assert '"_aws"' in written["stdout"]
    assert "stale connection (failed)" in written["stdout"] + written["logs"]


def uses_and_fails(event, context):
    step = event["step"]
    if step == "query":
        with event["connection"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return None
    if step == "raise":
        # the secret in the very source line: a stack trace quoting it must not be exported
        raise ConnectionError("no route to postgresql://o:S3cr3t-Pa55-7f1d@db/orders")
    return {"echo": SECRET}
