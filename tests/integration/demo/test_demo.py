"""``lifecycle-probe demo``, the main job, end to end in the local Lambda."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from lifecycle_probe import demo
from tests.report.browser import open_page

pytestmark = pytest.mark.integration


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_demo_agrees_with_the_truth_reports_and_draws_the_timeline(tmp_path, capsys):
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

    # AND it showed its progress, step by step
    assert "[1/8] cold start: first request" in printed
    assert "[8/8] snapstart: " in printed
    # AND it ended with the report on its own OTLP export, which agrees with the truth
    report = printed[printed.index("== lifecycle-probe report") :]
    environments = {r["environment_id"] for r in records if r["lifecycle_probe"] == "invocation"}
    assert len(environments) == 7
    assert f"invocations {len(truth)}, environments {len(environments)}\n" in report
    cold = sum(row["start_type_truth"] in ("cold", "restored") for row in truth)
    assert f"cold-start ratio (cold + restored): {cold / len(truth):.1%}" in report
    assert "stale connections:\n  127.0.0.1:" in report
    assert "Connections to 127.0.0.1:" in report  # the advice on them
    # AND the global the function leaks request state into (the demo's orders.py)
    assert "leaked request state:\n  orders.LAST_ITEMS: reported " in report
    assert "Request state kept in orders.LAST_ITEMS" in report
    assert "0 malformed" in report
    # AND it said where to look
    html = tmp_path / "report.html"
    assert f"where to look: open {html.as_uri()}" in report
    # AND the HTML timeline renders with one row per environment and no console errors
    page = open_page(html)
    rows = page.count(r'class="row" role="listitem" tabindex="0" data-env="')
    assert rows == len(environments)
    assert page.console == []
    # AND a screenshot of it is kept (pytest's folder, and a copy to look at)
    screenshot = tmp_path / "lifecycle-probe-report.png"
    open_page(html, screenshot=screenshot, size="1400,1100")
    assert screenshot.stat().st_size > 10_000
    shutil.copyfile(screenshot, "/tmp/lifecycle-probe-report.png")
