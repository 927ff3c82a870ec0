"""``lifecycle-probe emulate HANDLER``: events in, one JSON line per request out, a summary."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle_probe.emulator import cli
from tests.integration.emulator.emulator_support import subprocess_env

pytestmark = pytest.mark.integration


def parse(*argv):
    parser = argparse.ArgumentParser(prog="lifecycle-probe emulate")
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def emulate(handlers_dir, events, *more):
    """``emulate emu_basic.handler --code-dir HANDLERS --events EVENTS MORE...``: its status."""
    return cli.run(
        parse("emu_basic.handler", "--code-dir", str(handlers_dir), "--events", str(events), *more)
    )


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_emulate_writes_one_line_per_request_and_a_summary(handlers_dir, tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text('{"n": 1}\n\n{"raise": "bad event"}\n{"n": 3}\n')
    output = tmp_path / "out.jsonl"

    status = emulate(
        handlers_dir,
        events,
        "--output",
        str(output),
        "--env",
        "USER_VARIABLE=from-cli",
        "--timeout",
        "2",
    )

    assert status == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["cold"], r["outcome"]) for r in records] == [
        (True, "ok"),
        (False, "error"),
        (False, "ok"),
    ]
    assert {r["environment"] for r in records} == {"env-1"}
    assert all(r["init_type"] == "on-demand" and r["duration_ms"] > 0 for r in records)
    assert all(len(r["request_id"]) == 36 for r in records)
    assert records[0]["response"]["env"]["USER_VARIABLE"] == "from-cli"
    assert records[1]["error"]["errorMessage"] == "bad event"
    assert "response" not in records[1]
    assert "error" not in records[0]
    err = capsys.readouterr().err
    assert "3 requests in" in err
    assert "environments: 1" in err
    assert "cold starts:  1" in err
    assert "errors:       1" in err
    assert "timeouts:     0" in err
    assert "\r" not in err  # no progress line when stderr is not a terminal


def test_emulate_provisioned_with_progress_on_a_terminal(
    handlers_dir, tmp_path, monkeypatch, capsys
):
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n" * 4)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    status = emulate(
        handlers_dir, events, "--concurrency", "2", "--init-type", "provisioned-concurrency"
    )

    assert status == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 4
    assert {r["init_type"] for r in records} == {"provisioned-concurrency"}
    assert sum(r["start_type_truth"] == "provisioned" for r in records) <= 2
    shown = terminal.getvalue()
    assert "\r\x1b[K4/4 requests" in shown
    assert "environments: 2" in shown


def test_emulate_rejects_bad_events(handlers_dir, tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text('{"ok": 1}\nnot json\n')

    status = emulate(handlers_dir, events)

    assert status == 2
    assert f"{events}:2: not JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "said"),
    [
        # deeper than json.loads can go: RecursionError, a traceback
        ("[" * 100_000 + "]" * 100_000 + "\n", "{events}:1: JSON nested too deeply"),
        (b"\xff\xfe\x00garbage\n", "{events}: not UTF-8 text (JSON lines expected)"),
        ("{}\n" + "9" * 100_000 + "\n", "{events}:2: not JSON: Exceeds the limit (4300 digits)"),
        (None, "{events}: No such file or directory"),
        ("directory", "{events}: Is a directory"),
    ],
    ids=["nested", "binary", "huge-number", "missing", "directory"],
)
def test_emulate_says_what_is_wrong_with_an_events_file_in_one_line(
    handlers_dir, tmp_path, capsys, content, said
):
    events = tmp_path / "events.jsonl"
    if content == "directory":
        events.mkdir()
    elif isinstance(content, bytes):
        events.write_bytes(content)
    elif content is not None:
        events.write_text(content)

    status = emulate(handlers_dir, events)

    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lifecycle-probe emulate: error: {said.format(events=events)}")
    assert err.count("\n") == 1


def test_emulate_serves_an_event_nested_as_deep_as_json_reads(handlers_dir, tmp_path, capsys):
    # 900 levels: json.loads takes it at the top of the stack, but json.dumps failed on it
    # (RecursionError, a traceback) deeper down, in the middle of the requests
    events = tmp_path / "events.jsonl"
    events.write_text("[" * 900 + "]" * 900 + "\n")
    output = tmp_path / "out.jsonl"

    status = emulate(handlers_dir, events, "--output", str(output))

    assert status == 0, capsys.readouterr().err
    [record] = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["cold"] is True


def test_emulate_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        parse("emu_basic.handler", "--env", "NOEQUALS")
    with pytest.raises(SystemExit):
        parse("emu_basic.handler", "--concurrency", "0")


def test_python_dash_m_runs_emulate(handlers_dir):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lifecycle_probe.emulator",
            "emu_snap.handler",
            "--code-dir",
            str(handlers_dir),
            "--init-type",
            "snap-start",
            "--snapshot-pause",
            "0.05",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        check=False,
    )

    assert run.returncode == 0, run.stderr
    [record] = [json.loads(line) for line in run.stdout.splitlines()]
    assert (record["init_type"], record["start_type_truth"], record["outcome"]) == (
        "snap-start",
        "restored",
        "ok",
    )
    assert record["response"]["after_restore"] is True
    assert "1 requests in" in run.stderr


def test_emulate_proactive_waits_before_the_first_event_so_the_probe_agrees(tmp_path):
    # GIVEN a probed handler (console lines) emulated with --init-type proactive
    probe_handlers = Path(__file__).resolve().parents[1] / "fixtures" / "probe_handlers"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lifecycle_probe.emulator",
            "probed.handler",
            "--code-dir",
            str(probe_handlers),
            "--init-type",
            "proactive",
            "--log-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    [record] = [json.loads(line) for line in run.stdout.splitlines()]
    # THEN the local Lambda's own truth and the probe both say proactive
    assert (record["init_type"], record["start_type_truth"]) == ("proactive", "proactive")
    assert record["response"]["facts"]["start"] == "proactive"
