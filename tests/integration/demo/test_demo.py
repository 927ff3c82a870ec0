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
    # AND its logs are marked as its own, holding only what it writes: the next run
    # replaces them
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(
        (demo.MARKER, *demo.SECTIONS)
    )
    assert demo._is_demo_logs(tmp_path / "logs")
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


def run_demo(output, capsys):
    status = demo.run(argparse.Namespace(output_dir=str(output)))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_demo_leaves_a_logs_folder_it_did_not_write(tmp_path, capsys):
    # GIVEN a project whose logs/ folder holds the user's own log
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("precious\n")
    # WHEN the demo is pointed at it
    status, out, err = run_demo(tmp_path, capsys)
    # THEN it refuses in one line, before starting anything, and the log is kept
    assert status == 2
    assert err.startswith(f"lifecycle-probe demo: error: --output-dir {tmp_path}: ")
    assert "would overwrite logs" in err
    assert err.count("\n") == 1
    assert out == ""
    assert (tmp_path / "logs" / "app.log").read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


@pytest.mark.parametrize("name", ["report.html", "otlp.jsonl", "ground-truth.jsonl"])
def test_the_demo_overwrites_no_file_it_did_not_write(tmp_path, capsys, name):
    (tmp_path / name).write_text("mine\n")
    status, _, err = run_demo(tmp_path, capsys)
    assert status == 2
    assert f"would overwrite {name}," in err
    assert (tmp_path / name).read_text() == "mine\n"
    assert not (tmp_path / "logs").exists()


def test_the_demo_refuses_a_marked_logs_folder_holding_other_files(tmp_path, capsys):
    # GIVEN an earlier run's output, to which a file of the user's was added
    demo._prepare(tmp_path)
    (tmp_path / "logs" / "on-demand").mkdir()
    (tmp_path / "logs" / "on-demand" / "env-1.log").write_text("demo\n")
    (tmp_path / "logs" / "notes.txt").write_text("mine\n")
    status, _, err = run_demo(tmp_path, capsys)
    assert status == 2
    assert "would overwrite logs," in err
    assert (tmp_path / "logs" / "notes.txt").read_text() == "mine\n"
    assert (tmp_path / "logs" / "on-demand" / "env-1.log").exists()


def test_the_demo_replaces_its_own_earlier_output_and_keeps_the_rest(tmp_path):
    # GIVEN an earlier run's output beside a file of the user's, and a report.html that is
    # a symlink (removed, never followed)
    demo._prepare(tmp_path)
    (tmp_path / "logs" / "snap-start").mkdir()
    (tmp_path / "logs" / "snap-start" / "env-1.log").write_text("old run\n")
    (tmp_path / "otlp.jsonl").write_text("old run\n")
    elsewhere = tmp_path / "elsewhere.html"
    elsewhere.write_text("kept\n")
    (tmp_path / "report.html").symlink_to(elsewhere)
    (tmp_path / "README.txt").write_text("mine\n")
    # WHEN the next run prepares the folder
    demo._prepare(tmp_path)
    # THEN its own output is gone, its new logs folder marked, the rest untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.txt", "elsewhere.html", "logs"]
    assert [p.name for p in (tmp_path / "logs").iterdir()] == [demo.MARKER]
    assert elsewhere.read_text() == "kept\n"
    assert (tmp_path / "README.txt").read_text() == "mine\n"


@pytest.mark.parametrize(
    ("where", "said"),
    [("a-file", "not a directory"), ("/proc/nope", "No such file or directory")],
)
def test_an_output_dir_the_demo_cannot_use_is_said_in_one_line(tmp_path, capsys, where, said):
    (tmp_path / "a-file").write_text("x\n")
    output = tmp_path / where
    status, out, err = run_demo(output, capsys)
    assert status == 2
    assert err.startswith(f"lifecycle-probe demo: error: --output-dir {output}: {said}")
    assert err.count("\n") == 1
    assert out == ""
    assert (tmp_path / "a-file").read_text() == "x\n"
