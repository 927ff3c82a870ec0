"""``lifecycle-probe demo``, the main job, end to end in the local Lambda."""

from __future__ import annotations

import argparse
import json

import pytest

from lifecycle_probe import demo

pytestmark = pytest.mark.integration


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_demo_agrees_with_the_truth_and_reports_the_stale_connection(tmp_path, capsys):
    # WHEN the demo runs
    assert demo.run(argparse.Namespace(output_dir=str(tmp_path))) == 0
    printed = capsys.readouterr().out
    # THEN every probe tag agreed with the local Lambda's ground truth
    truth = read_jsonl(tmp_path / "ground-truth.jsonl")
    assert f"probe agrees with truth {len(truth)}/{len(truth)}" in printed
    # AND the connection the function made at INIT, left idle 1.5 s by the freeze step
    # (its service cuts idle connections after 1 s), was reported stale and replaced
    [frozen] = [row["request_id"] for row in truth if row["step"] == "freeze"]
    records = read_jsonl(tmp_path / "probe-records.jsonl")
    stale = [
        r
        for r in records
        if r["lifecycle_probe"] == "event" and r["name"] == "lifecycle.connection.stale"
    ]
    [event] = [e for e in stale if e["request_id"] == frozen]
    assert event["lifecycle.connection.outcome"] == "detected"
    assert event["lifecycle.connection.created_in"] == "init"
    assert event["lifecycle.connection.idle_s"] >= 1.4
    assert event["lifecycle.connection.reconnect_s"] > 0
    assert "db.system" not in event
    assert f"freeze         {frozen[:8]} detected" in printed
    # AND the OTLP file holds the invocation spans of every request
    spans = [
        span
        for line in read_jsonl(tmp_path / "otlp.jsonl")
        for resource in line.get("resourceSpans", [])
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    assert sum(span["kind"] == 2 for span in spans) == len(truth)
