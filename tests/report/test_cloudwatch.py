"""``report --cloudwatch``: a log group read through boto3 from a local CloudWatch Logs (moto)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifecycle_probe.cli import main
from tests.report.synthetic import emf_document
from tests.services import require_module

GROUP = "/aws/lambda/orders"


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


@pytest.fixture(scope="module")
def cloudwatch_logs(tmp_path_factory):
    """moto's server mode on 127.0.0.1: a CloudWatch Logs endpoint for boto3."""
    require_module("moto.server")  # a dev dependency: missing, it fails under CI's switch
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as check:
                if check.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"moto server did not start: {Path(log).read_text()}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def aws_env(monkeypatch):
    # Credentials and region as the AWS CLI finds them: here, from the environment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def put_log_group(endpoint: str) -> int:
    """A function's log group: two streams of EMF documents among Lambda's own lines."""
    import boto3

    client = boto3.client("logs", endpoint_url=endpoint, region_name="us-east-1")
    client.create_log_group(logGroupName=GROUP)
    now_ms = int(time.time() * 1000)
    streams = {
        "2026/11/30/[$LATEST]aaa": [
            emf_document("env-a", 1, "cold", end_ms=now_ms - 60_000, init_ms=250.0),
            emf_document("env-a", 2, "warm", end_ms=now_ms - 50_000, idle_ms=9_990.0),
            emf_document(
                "env-a", 3, "warm", end_ms=now_ms - 40_000, idle_ms=9_990.0, stale_detected=1
            ),
        ],
        "2026/11/30/[$LATEST]bbb": [
            emf_document("env-b", 1, "cold", end_ms=now_ms - 30_000, init_ms=270.0),
            emf_document(
                "env-b", 2, "warm", end_ms=now_ms - 20_000, idle_ms=9_990.0, outcome="error"
            ),
        ],
    }
    count = 0
    for stream, documents in streams.items():
        client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
        events = []
        for index, document in enumerate(documents):
            at = json.loads(document)["_aws"]["Timestamp"]
            events.append({"timestamp": at - 5, "message": "START RequestId: x Version: $LATEST"})
            events.append({"timestamp": at, "message": document})
            events.append({"timestamp": at + index + 1, "message": "END RequestId: x"})
        client.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)
        count += len(events)
    return count


def test_report_reads_the_log_group_page_by_page(cloudwatch_logs, aws_env, capsys):
    from lifecycle_probe.report.cloudwatch import log_lines

    # GIVEN a log group with 15 events in two streams
    assert put_log_group(cloudwatch_logs) == 15
    # WHEN it is read 4 events a page
    lines = list(log_lines(GROUP, 3600, endpoint_url=cloudwatch_logs, page_size=4))
    # THEN every event came back
    assert len(lines) == 15
    # AND the report on the group (the CLI, through boto3) has every figure
    code = main(
        ["report", "--cloudwatch", GROUP, "--since", "1h", "--endpoint-url", cloudwatch_logs,
         "--format", "json"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["invocations"] == 5
    assert report["environments"] == 2
    assert report["starts"] == {"cold": 2, "warm": 3}
    assert report["init_duration_s"] == {"p50": 0.25, "p90": 0.27, "p99": 0.27, "max": 0.27}
    assert report["idle_s"] == {"p50": 9.99, "p99": 9.99}
    assert report["reuse"] == {"max": 3, "p50": 2, "per_environment": {"env-a": 3, "env-b": 2}}
    assert report["stale_connections"] == [{"client": "unknown", "outcome": "detected", "count": 1}]
    assert report["errors"] == 1
    # AND --since leaves out what is older
    main(["report", "--cloudwatch", GROUP, "--since", "35s", "--endpoint-url", cloudwatch_logs,
          "--format", "json"])  # fmt: skip
    assert json.loads(capsys.readouterr().out)["invocations"] == 2


def test_a_missing_log_group_is_one_line_not_a_traceback(cloudwatch_logs, aws_env, capsys):
    code = main(["report", "--cloudwatch", "/aws/lambda/none", "--endpoint-url", cloudwatch_logs])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("lifecycle-probe report: reading /aws/lambda/none: ")
    assert "ResourceNotFoundException" in err
