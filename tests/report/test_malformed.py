"""Malformed and truncated input is counted and reported, never a crash."""

from __future__ import annotations

import gzip
import json

from lifecycle_probe.cli import main
from lifecycle_probe.report import summarise
from tests.report.synthetic import Function


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
