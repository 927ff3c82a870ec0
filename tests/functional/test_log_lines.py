"""The probe's own log lines: plain text, or JSON when the function logs JSON."""

from __future__ import annotations

import json
import logging

import pytest

from lifecycle_probe import loglines, probe
from lifecycle_probe.testing import FakeContext, fresh_environment

SECRET = "p4ssw0rd-in-the-event"


@pytest.fixture(autouse=True)
def plain_runtime(monkeypatch):
    monkeypatch.delenv("AWS_LAMBDA_LOG_FORMAT", raising=False)
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    monkeypatch.setattr(loglines, "_powertools_logger_service", None)
    monkeypatch.setattr(loglines, "_configured_service", None)


def invoke_twice(capsys, **options):
    fresh_environment(environ={"AWS_LAMBDA_FUNCTION_NAME": "orders"})
    handler = probe(exporter="console", **options)(lambda event, context: "done")
    capsys.readouterr()
    event = {"password": SECRET}
    assert handler(event, FakeContext(aws_request_id="r-1")) == "done"
    assert handler(event, FakeContext(aws_request_id="r-2")) == "done"
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    return captured.out


def test_plain_init_report_once_per_environment(capsys):
    out = invoke_twice(capsys)
    reports = [line for line in out.splitlines() if "INIT report" in line]
    assert reports == [
        next(line for line in out.splitlines() if line.startswith("lifecycle_probe: INIT report"))
    ]
    assert ", on-demand, start cold; slowest imports: " in reports[0]


def test_json_init_report_when_lambda_formats_logs_as_json(capsys, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_LOG_FORMAT", "JSON")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    out = invoke_twice(capsys, service="orders-api")
    (report,) = [json.loads(x) for x in out.splitlines() if '"init_report"' in x]
    assert report["lifecycle_probe"] == "init_report"
    assert (report["level"], report["service"], report["cold_start"]) == (
        "INFO",
        "orders-api",
        True,
    )
    assert report["function_request_id"] == report["requestId"] == "r-1"
    assert report["xray_trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert report["function_name"] == "orders"
    assert report["lifecycle_invocation_seq"] == 1
    assert report["init_duration_ms"] == pytest.approx(250.0, abs=1.0)


def test_a_powertools_logger_makes_the_lines_json_and_metrics_alone_do_not(capsys):
    from aws_lambda_powertools import Metrics

    Metrics(namespace="Shop")  # imports Powertools' logging package too
    assert not loglines.powertools_logger_in_use()
    from aws_lambda_powertools import Logger

    logger = Logger(service="orders-api")
    try:
        assert loglines.powertools_logger_in_use()
        out = invoke_twice(capsys)
        (report,) = [json.loads(x) for x in out.splitlines() if '"init_report"' in x]
        # the probe's service is not set: the Logger's, as the function's own lines
        assert report["service"] == "orders-api"
        assert report["function_memory_size"] is None or isinstance(
            report["function_memory_size"], str
        )
    finally:
        for handler in list(logger._logger.handlers):
            logger._logger.removeHandler(handler)
        logging.getLogger("orders-api").handlers.clear()


@pytest.mark.parametrize(
    ("header", "root"),
    [
        ("Root=1-a-b;Parent=c;Sampled=1", "1-a-b"),
        ("Parent=c;Root=1-x-y", "1-x-y"),
        ("Sampled=1", None),
        ("", None),
        (None, None),
    ],
)
def test_xray_trace_id_is_the_root(header, root):
    assert loglines.xray_trace_id(header) == root
