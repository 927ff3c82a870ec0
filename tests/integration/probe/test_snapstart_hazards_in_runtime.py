"""SnapStart hazards found in real runtime processes (awslambdaric, snap-start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emf_spec import json_lines
from tests.integration.probe.otlp import attributes, read_otlp

pytestmark = pytest.mark.integration

HANDLERS = Path(__file__).resolve().parents[1] / "fixtures" / "resource_handlers"
HAZARDS = {
    ("snap_hazards", "CONNECTION", "connection"),
    ("snap_hazards", "INSTANCE_ID", "random"),
    ("snap_hazards", "JITTER", "random"),
    ("snap_hazards", "SALT", "random"),
    ("snap_hazards", "STARTED_AT", "timestamp"),
    ("snap_hazards", "STARTED_DT", "timestamp"),
    ("snap_hazards", "CREDENTIALS", "credentials"),
}


def run(local_lambda, handler, postgres_env, tmp_path, invocations=2):
    path = tmp_path / "otlp.jsonl"
    env = {
        "HAZARD_PG_DSN": postgres_env["STALE_PG_DSN"],
        "LIFECYCLE_PROBE_OTLP_FILE": str(path),
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
    }
    emulator = local_lambda(
        handler,
        HANDLERS,
        function_name="snap-fn",
        env=env,
        init_type="snap-start",
        snapshot_pause_s=0.2,
        log_dir=tmp_path / "logs",
    )
    results = [emulator.invoke({}) for _ in range(invocations)]
    emulator.close()
    spans, points = read_otlp(path)
    invocations_spans = sorted(
        (s for s in spans if s["name"] == "snap-fn"),
        key=lambda s: s["attrs"]["lifecycle.invocation_seq"],
    )
    return emulator, results, invocations_spans, points


def hazards_of(span):
    found = []
    for event in span.get("events", []):
        if event["name"] == "lifecycle.snapstart.hazard":
            attrs = attributes(event)
            found.append(
                (
                    attrs["code.namespace"],
                    attrs["lifecycle.global.name"],
                    attrs["lifecycle.snapstart.hazard.kind"],
                )
            )
    return found


def test_each_hazard_is_reported_once_after_the_restore(local_lambda, postgres_env, tmp_path):
    # GIVEN a SnapStart function keeping a connection, random values, timestamps and
    # credentials with an expiry from INIT, restored from its snapshot
    emulator, results, spans, points = run(
        local_lambda, "snap_hazards.handler", postgres_env, tmp_path
    )
    first, second = spans
    assert first["attrs"]["lifecycle.start"] == "restored"
    # THEN the first invocation after the restore reports each, named, once
    assert sorted(hazards_of(first)) == sorted(HAZARDS)
    # and the next invocation nothing
    assert hazards_of(second) == []
    # never a value: only names and kinds
    text = str(first.get("events"))
    assert "AKIDLOCAL" not in text
    assert "2030" not in text
    # one warning each, naming the module and the global
    lines = json_lines(emulator.logs(results[0].environment))
    warnings = [line for line in lines if line.get("lifecycle_probe") == "snapstart_hazard"]
    assert {(w["code_namespace"], w["global_name"], w["hazard_kind"]) for w in warnings} == HAZARDS
    assert len(warnings) == len(HAZARDS)
    assert {w["function_request_id"] for w in warnings} == {results[0].request_id}
    assert any("snap_hazards.SALT holds a random value" in w["message"] for w in warnings)
    # and the counter, by kind
    counted: dict[str, int] = {}
    for point in points:
        if point["metric"] == "lifecycle.snapstart.hazards":
            kind = point["attrs"]["lifecycle.snapstart.hazard.kind"]
            counted[kind] = counted.get(kind, 0) + int(point["asInt"])
    assert counted == {"connection": 1, "random": 3, "timestamp": 2, "credentials": 1}


def test_a_clean_snapstart_function_reports_none(local_lambda, postgres_env, tmp_path):
    emulator, results, spans, points = run(
        local_lambda, "snap_clean.handler", postgres_env, tmp_path
    )
    assert [r.response for r in results] == [{"ok": True}, {"ok": True}]
    assert spans[0]["attrs"]["lifecycle.start"] == "restored"
    assert [hazards_of(s) for s in spans] == [[], []]
    assert not [p for p in points if p["metric"] == "lifecycle.snapstart.hazards"]
    assert "snapstart_hazard" not in emulator.logs(results[0].environment)
