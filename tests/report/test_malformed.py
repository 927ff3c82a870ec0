"""Malformed and truncated input is counted and reported, never a crash."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from lifecycle_probe.cli import main
from lifecycle_probe.records import MAX_EVENTS
from lifecycle_probe.report import Reader, reader, summarise
from lifecycle_probe.report.html import render as render_html
from lifecycle_probe.report.records import LEAK_EVENT, Import
from lifecycle_probe.report.text import render as render_text
from lifecycle_probe.sinks.otel.channels import MAX_WAITING_SPANS
from tests.report.synthetic import Function, emf_document, stale


def good_lines() -> list[str]:
    f = Function()
    f.invoke("env-a", 0.0)
    f.invoke("env-a", 1.0)
    return f.lines


def test_bad_lines_are_counted_and_the_good_ones_still_read(tmp_path, capsys):
    # GIVEN two good invocations among every kind of bad line
    good = good_lines()
    bad_type = json.loads(good[0])
    bad_type["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][3]["value"] = {
        "intValue": "one"
    }  # lifecycle.invocation_seq
    no_environment = json.loads(good[0])
    spans = no_environment["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["attributes"] = [
        a for a in spans[0]["attributes"] if a["key"] != "lifecycle.environment.id"
    ]
    lines = [
        good[0],
        good[1][: len(good[1]) // 2],  # cut off mid-line, as a crashed writer leaves it
        json.dumps(bad_type),
        json.dumps(no_environment),
        '{"lifecycle_probe":"invocation","environment_id":"e","invocation_seq":"x","start":"cold"}',
        '{"resourceSpans": 3}',
        '{"_aws": {"Timestamp": 1}, "lifecycle_probe": "metrics"}',  # EMF without ids
        "",
        "START RequestId: 1 Version: $LATEST",
        '{"some": "json of the function"}',
        '\x00\x01garbage{"resourceSpans"',
        good[1],
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # WHEN the report reads it
    summary, stats = summarise([str(path)])
    # THEN the good lines count, each bad one is counted as malformed, the rest ignored
    assert summary.invocations == 2
    assert stats.malformed == 7
    assert stats.ignored == 3
    assert len(stats.malformed_examples) == 5
    assert stats.malformed_examples[0].startswith(f"{path}:2: not JSON")
    # AND the CLI says so and succeeds
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "7 malformed" in out
    assert f"malformed: {path}:2: not JSON" in out


def test_a_truncated_gzip_file_counts_one_malformed_line(tmp_path, capsys):
    # GIVEN a gzip file cut short (a copy interrupted)
    text = "".join(line + "\n" for line in good_lines() * 50)
    data = gzip.compress(text.encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    # WHEN the report reads it
    summary, stats = summarise([str(path)])
    # THEN what could be read was, and the cut is one malformed line
    assert summary.invocations == 2  # the same two invocations, deduplicated
    assert stats.malformed >= 1
    assert main(["report", str(path), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["invocations"] == 2
    assert "malformed" in captured.err


def test_empty_and_binary_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 10)
    summary, stats = summarise([str(tmp_path)])
    report = summary.to_json()
    assert report["invocations"] == 0
    assert report["cold_start_ratio"] is None
    assert report["init_duration_s"] == {"p50": None, "p90": None, "p99": None, "max": None}
    assert report["advice"] == []
    assert stats.malformed == 0


def test_missing_source_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def console_invocation(environment: str, seq: object) -> str:
    """One invocation line of the console exporter's."""
    return json.dumps(
        {
            "lifecycle_probe": "invocation",
            "start": "warm",
            "invocation_seq": seq,
            "environment_id": environment,
            "start_ns": 1_796_069_128_834_459_098,
            "end_ns": 1_796_069_128_835_794_350,
            "outcome": "ok",
        }
    )


def console_leak(name: object, **more: object) -> str:
    """One leaked-global event line of the console exporter's."""
    return json.dumps(
        {
            "lifecycle_probe": "event",
            "name": LEAK_EVENT,
            "time_ns": 1_796_069_130_943_197_195,
            "environment_id": "env-a",
            "code.namespace": "orders",
            "lifecycle.global.name": name,
            **more,
        }
    )


def emf_with(env: str, seq: int, end_ms: float = 1_796_069_059_296, **metrics: object) -> str:
    document = json.loads(emf_document(env, seq, "warm", end_ms=end_ms))
    document.update(metrics)
    return json.dumps(document)


def test_absurd_emf_counts_are_malformed_not_events_by_the_trillion(tmp_path):
    # GIVEN EMF documents counting more leaks or stale connections than one invocation
    # record can carry (the probe keeps MAX_EVENTS), one infinite, and a real count
    path = tmp_path / "emf.log"
    path.write_text(
        "\n".join(
            [
                emf_with("env-a", 1, GlobalLeaks=[float(MAX_EVENTS + 1)]),
                emf_with("env-a", 2, StaleConnectionRisk=[float(MAX_EVENTS + 1)]),
                emf_with("env-a", 3, GlobalLeaks=["INF"]).replace('"INF"', "1e999"),
                emf_with("env-a", 4, GlobalLeaks=[3.0]),
            ]
        )
        + "\n"
    )
    # WHEN the report reads them
    summary, stats = summarise([str(path)])
    # THEN each absurd document is one malformed line; the real count is read as three
    assert stats.malformed_examples == [
        f"{path}:1: Malformed: GlobalLeaks out of range",
        f"{path}:2: Malformed: StaleConnectionRisk out of range",
        f"{path}:3: Malformed: number out of range",
    ]
    assert summary.invocations == 1
    assert summary.to_json()["global_leaks"] == [
        {"module": "?", "name": "?", "environments": 1, "count": 3, "first_seen_seq": None}
    ]


def summarise_with_peak(path):
    """The report of ``path``, and the most memory Python held while reading it."""
    tracemalloc.start()
    try:
        summary, stats = summarise([str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return summary, stats, peak


def test_an_absurd_invocation_seq_costs_no_memory(tmp_path):
    # GIVEN invocations numbered far beyond what an environment serves, one beyond 64 bits
    path = tmp_path / "console.log"
    lines = [console_invocation("env-a", 10**8), console_invocation("env-b", 2**62)]
    path.write_text("\n".join([*lines, console_invocation("env-c", 10**30)]) + "\n")
    # WHEN the report reads them
    summary, stats, peak = summarise_with_peak(path)
    # THEN the two in range are counted, without a bitmap up to their number (10**8 bits
    # would be 12.5 MB), and the one beyond 64 bits is malformed
    assert summary.invocations == 2
    assert sorted(summary.environments) == ["env-a", "env-b"]
    assert stats.malformed == 1
    assert stats.malformed_examples == [f"{path}:3: Malformed: invocation_seq out of range"]
    assert peak < 2_000_000
    # AND the same invocation read twice still counts once
    summary.add_all(Reader().read_lines(lines, "again"))
    assert summary.invocations == 2
    assert summary.duplicates == 2


def test_hostile_values_are_malformed_lines_and_the_report_still_renders(tmp_path):
    # GIVEN lines of the probe's shape with values no probe writes, among good lines
    good = good_lines()
    lines = [
        good[0],
        '{"lifecycle_probe": "init", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        console_leak("LAST", **{"code.namespace": {"a": 1}}),  # not a string
        console_leak(["LAST"]),
        emf_with("env-e", 1, end_ms=1e308),
        console_invocation("env-c", 1).replace("1796069128835794350", "Infinity"),
        console_invocation("env-c", 2).replace("1796069128835794350", "1" + "0" * 30),
        console_invocation("env-c", 3).replace('"outcome"', '"idle_s": 1e300, "outcome"'),
        good[1],
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # WHEN the report reads them and renders every format
    summary, stats = summarise([str(path)])
    report = summary.to_json()
    json.dumps(report, allow_nan=False)
    render_text(report, stats)
    render_html(summary, report, stats)
    # THEN each bad line is one malformed line, and the good ones are read
    assert stats.malformed == 7
    assert summary.invocations == 2
    reasons = [e.split(": ", 1)[1] for e in stats.malformed_examples]
    assert reasons[0].startswith("not JSON (maximum recursion depth exceeded")
    assert reasons[1:] == [
        "Malformed: code.namespace: not a string or number: dict",
        "Malformed: lifecycle.global.name: not a string or number: list",
        "Malformed: Timestamp out of range",
        "not JSON (Infinity is not a number)",
    ]


def test_an_over_long_line_is_skipped_unread(tmp_path, monkeypatch):
    # GIVEN a gzip file whose middle line is far longer than the longest line read
    good = good_lines()
    monkeypatch.setattr(reader, "MAX_LINE_CHARS", max(len(line) for line in good) + 1)
    long_line = '{"resourceSpans": [' + "0," * 2_500_000 + "0]}"
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip.compress(f"{good[0]}\n{long_line}\n{good[1]}\n".encode()))
    # WHEN the report reads it
    summary, stats, peak = summarise_with_peak(path)
    # THEN the long line is one malformed line, read past without holding it (5 MB)
    assert summary.invocations == 2
    assert stats.lines == 3
    assert stats.malformed == 1
    assert stats.malformed_examples == [f"{path}:2: longer than {reader.MAX_LINE_CHARS} characters"]
    assert peak < 2_000_000


def test_the_line_cap_is_far_above_the_probes_longest_line():
    # GIVEN the longest line otlp-file writes: every waiting span in one export, at most
    # MAX_WAITING_SPANS, here invocations each with a stale connection
    f = Function()
    for seq in range(MAX_WAITING_SPANS):
        f.invoke("env-a", float(seq), events=(stale(900.0, "risk", reconnect_s=0.05),))
    # (one export: one resource, one scope, every span under it)
    batch = json.loads(f.lines[0])
    spans = batch["resourceSpans"][0]["scopeSpans"][0]["spans"]
    for line in f.lines[1:]:
        spans += json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    longest = len(json.dumps(batch, separators=(",", ":")))
    # THEN a Collector's file exporter's default batch (8,192 spans, 4 such exports) is
    # read too, with room to spare
    assert len(spans) > MAX_WAITING_SPANS
    assert longest * 4 * 2 < reader.MAX_LINE_CHARS


def test_json_output_stays_json_when_a_line_has_nan(tmp_path, capsys):
    # GIVEN an INIT line whose duration is NaN (Python's json writes it; JSON has none)
    path = tmp_path / "nan.jsonl"
    nan_init = (
        '{"lifecycle_probe": "init", "environment_id": "env-a", "init_type": "on-demand", '
        '"start_ns": 1796069059232929141, "end_ns": 1796069059292001229, "duration_s": NaN}'
    )
    path.write_text("\n".join([*good_lines(), nan_init]) + "\n")
    # WHEN the report prints JSON
    assert main(["report", str(path), "--format", "json"]) == 0
    captured = capsys.readouterr()

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in the report's JSON")

    # THEN it is JSON (no NaN), and the NaN line is counted malformed
    report = json.loads(captured.out, parse_constant=no_constants)
    assert report["init_duration_s"]["p50"] == 0.2  # the good lines' INIT
    assert "1 malformed" in captured.err
    assert f"{path}:3: not JSON (NaN is not a number)" in captured.err


def test_control_characters_from_the_input_are_escaped_in_the_text_report(tmp_path, capsys):
    # GIVEN a leaked global whose name clears the screen and retitles the terminal
    path = tmp_path / "inject.jsonl"
    path.write_text(
        "\n".join([*good_lines(), console_leak("x\x1b[2J\x1b]0;PWNED\x07\x9b\x7f")]) + "\n"
    )
    # WHEN the text report prints it
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    # THEN the controls are shown escaped, none reaches the terminal
    assert "orders.x\\x1b[2J\\x1b]0;PWNED\\x07\\x9b\\x7f: reported 1 times" in out
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in out)


def test_an_unreadable_file_is_named_and_skipped(tmp_path, capsys):
    # GIVEN a folder with a good file and one that opens but cannot be read
    if not Path("/proc/self/mem").exists():
        pytest.skip("needs /proc/self/mem")
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(good_lines()) + "\n")
    (folder / "b.jsonl").symlink_to("/proc/self/mem")
    # WHEN the report reads the folder
    assert main(["report", str(folder)]) == 0
    captured = capsys.readouterr()
    # THEN the unreadable file is one line on stderr, the rest is reported
    assert captured.err == (
        f"lifecycle-probe report: cannot read {folder / 'b.jsonl'}: Input/output error\n"
    )
    assert captured.out.startswith("invocations 2, environments 1\n")
    assert "from 1 sources" in captured.out
    # AND with nothing readable there is no report, and a source error
    assert main(["report", str(folder / "b.jsonl")]) == 2
    captured = capsys.readouterr()
    assert captured.err.endswith("b.jsonl: Input/output error\n")
    assert captured.out == ""


def test_an_unwritable_html_path_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "good.jsonl"
    path.write_text("\n".join(good_lines()) + "\n")
    for out in (tmp_path / "missing" / "report.html", tmp_path):
        assert main(["report", str(path), "--html", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"lifecycle-probe report: cannot write {out}: ")
        assert err.count("\n") == 1


def test_import_spans_whose_parents_loop_name_no_import_and_end(tmp_path):
    # GIVEN import spans whose parents form a cycle (a hostile or broken file)
    f = Function()
    f.invoke(
        "a", 0, imports=(("lib", 0.01, "site-packages"), ("dep", 0.01, "site-packages", "lib"))
    )
    request = json.loads(f.lines[0])
    spans = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
    lib, dep = (s for s in spans if s["name"] == "lambda.import")
    lib["parentSpanId"] = dep["spanId"]
    # WHEN it is read
    records = list(Reader().read_line(json.dumps(request), "line 1"))
    # THEN both imports are kept, naming no function import, and reading ends
    imports = [r for r in records if isinstance(r, Import)]
    assert sorted((i.module, i.imported_by) for i in imports) == [("dep", None), ("lib", None)]
