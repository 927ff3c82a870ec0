"""Leaked request state found in real runtime processes (awslambdaric), the article's way."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle_probe.sinks.console import read_lines
from tests.emf_spec import json_lines, metric_values

pytestmark = pytest.mark.integration

LEAK_HANDLERS = Path(__file__).resolve().parents[1] / "fixtures" / "leak_handlers"
# boto3 wants credentials to make a client; nothing is sent anywhere.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDLOCAL", "AWS_SECRET_ACCESS_KEY": "local-only"}
LEAKED = {
    ("leaky", "current_order_id"),
    ("leaky", "customer"),
    ("leaky", "recent"),
    ("leaky", "state"),
    ("leaky_helpers", "alias"),
}


def order(number):
    return {
        "orderId": f"ord-{number:06d}",
        "customer": {"id": f"cust-{number}", "tier": "gold"},
        "awsRegion": "eu-west-1",
    }


def test_globals_rebound_to_the_event_are_reported_once_each(local_lambda, tmp_path):
    # GIVEN the article's handler (and harder cousins), on-demand, in real runtimes
    env = {**CREDENTIALS, "LIFECYCLE_PROBE_EXPORTER": "console"}
    emulator = local_lambda("leaky.handler", LEAK_HANDLERS, env=env, log_dir=tmp_path)
    # WHEN one environment serves three orders
    results = [emulator.invoke(order(n)) for n in (1, 2, 3)]
    emulator.close()
    assert [r.response["counter"] for r in results] == [1, 2, 3]
    (env_id,) = {r.environment for r in results}
    log = emulator.logs(env_id)
    lines = read_lines(log)
    leaks = [line for line in lines if line.get("name") == "lifecycle.global.leak"]
    # THEN each leaked global is reported once, in the invocation that first leaked it,
    # under its module and name, and nothing else is
    assert {(e["code.namespace"], e["lifecycle.global.name"]) for e in leaks} == LEAKED
    assert len(leaks) == len(LEAKED)
    assert {e["lifecycle.global.first_seen_seq"] for e in leaks} == {1}
    assert {e["request_id"] for e in leaks} == {results[0].request_id}
    # never the value
    assert not [e for e in leaks if "ord-000001" in str(e) or "cust-1" in str(e)]
    # and one warning line each
    warnings = [x for x in log.splitlines() if "leaked request state" in x]
    assert len(warnings) == len(LEAKED)
    assert any("leaky.current_order_id was rebound" in x for x in warnings)


def test_globals_off_reports_nothing(local_lambda, tmp_path):
    env = {**CREDENTIALS, "LIFECYCLE_PROBE_EXPORTER": "console", "LIFECYCLE_PROBE_GLOBALS": "off"}
    emulator = local_lambda("leaky.handler", LEAK_HANDLERS, env=env, log_dir=tmp_path)
    result = emulator.invoke(order(1))
    emulator.close()
    log = emulator.logs(result.environment)
    assert "lifecycle.global.leak" not in log
    assert "leaked request state" not in log


def test_after_the_response_the_default_exporter_counts_the_leaks(local_lambda, tmp_path):
    # GIVEN the default exporter (EMF), whose records are built after the response
    emulator = local_lambda(
        "leaky.handler",
        LEAK_HANDLERS,
        env={**CREDENTIALS, "AWS_LAMBDA_LOG_FORMAT": "JSON"},
        log_dir=tmp_path,
    )
    results = [emulator.invoke(order(n)) for n in (1, 2)]
    emulator.close()
    lines = json_lines(emulator.logs(results[0].environment))
    documents = {d["function_request_id"]: d for d in lines if "_aws" in d}
    # THEN the first invocation's EMF counts its five leaks, the second none
    assert metric_values(documents[results[0].request_id])["GlobalLeaks"] == [5.0]
    assert "GlobalLeaks" not in metric_values(documents[results[1].request_id])
    # and one JSON warning per leaked global, joined to the invocation
    warnings = [d for d in lines if d.get("lifecycle_probe") == "global_leak"]
    assert {(w["code_namespace"], w["global_name"]) for w in warnings} == LEAKED
    assert {w["function_request_id"] for w in warnings} == {results[0].request_id}
    assert {w["level"] for w in warnings} == {"WARNING"}
