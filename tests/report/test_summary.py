"""``lifecycle-probe report`` on generated OTLP JSON whose every answer is known."""

from __future__ import annotations

import json

import pytest

from lifecycle_probe.cli import main
from lifecycle_probe.report import summarise
from tests.report.synthetic import Function, hazard, leak, stale

BOTO3 = "site-packages"


def known_function() -> Function:
    """Four environments, one failed INIT, and every kind of event once."""
    f = Function()
    # env-a: cold, three warm (one after a stale connection, one leaking, one failing)
    f.invoke(
        "env-a", 0.0, start="cold", init_s=0.2,
        imports=(("boto3", 0.12, BOTO3), ("app", 0.03, "function"), ("json", 0.002, "runtime")),
    )  # fmt: skip
    f.invoke("env-a", 1.0, events=(leak("app", "current_order_id", 2),))
    f.invoke(
        "env-a", 3.0, events=(stale(1.99, "detected", db_system="postgresql", reconnect_s=0.004),)
    )
    f.invoke("env-a", 4.0, outcome="error")
    # env-b: a cold start while env-a was alive, then a timeout
    f.invoke("env-b", 0.5, init_s=0.3, imports=(("boto3", 0.10, BOTO3),))
    f.invoke("env-b", 2.0, outcome="timeout")
    # env-c: provisioned, initialised 10 s ahead
    f.invoke(
        "env-c", 5.0, start="provisioned", init_s=0.4, init_gap_s=10.0,
        init_type="provisioned-concurrency", imports=(("boto3", 0.14, BOTO3),),
    )  # fmt: skip
    # env-d: restored from a SnapStart snapshot, with a hazard
    f.invoke(
        "env-d", 6.0, start="restored", init_s=0.001, init_type="snap-start",
        events=(hazard("app", "SEED", "random"),),
    )  # fmt: skip
    f.init_failure("env-e", 7.0, "Runtime.ImportModuleError")
    f.lines.append(f.metrics_line())
    return f


EXPECTED = {
    "invocations": 8,
    "environments": 4,
    "starts": {"cold": 2, "warm": 4, "provisioned": 1, "restored": 1},
    "cold_start_ratio": 0.375,
    "init_duration_s": {"p50": 0.2, "p90": 0.4, "p99": 0.4, "max": 0.4},
    # (env-d's synthetic start is a lambda.init span: the INIT the figures above count)
    "start_cost": {"init": 4, "restore_lambda": 0, "restore_probe": 0},
    "slowest_imports": [
        {"module": "boto3", "p50_s": 0.12, "environments": 3},
        {"module": "app", "p50_s": 0.03, "environments": 1},
        {"module": "json", "p50_s": 0.002, "environments": 1},
    ],
    "reuse": {
        "max": 4,
        "p50": 1,
        "per_environment": {"env-a": 4, "env-b": 2, "env-c": 1, "env-d": 1},
    },
    "idle_s": {"p50": 0.99, "p99": 1.99},
    "stale_connections": [{"client": "postgresql", "outcome": "detected", "count": 1}],
    "global_leaks": [
        {
            "module": "app",
            "name": "current_order_id",
            "environments": 1,
            "count": 1,
            "first_seen_seq": 2,
        }
    ],
    "init_failures": 1,
    "errors": 1,
    "timeouts": 1,
}


def test_every_key_has_the_known_answer(tmp_path):
    # GIVEN OTLP JSON lines with known answers
    path = known_function().write(tmp_path / "otlp.jsonl")
    # WHEN the report reads them
    summary, stats = summarise([str(path)])
    report = summary.to_json()
    # THEN every key is exactly as documented, in order, and every figure as computed
    assert list(report) == [*EXPECTED, "advice"]
    for key, value in EXPECTED.items():
        assert report[key] == value, key
    assert [a["rule"] for a in report["advice"]] == [
        "stale-connection", "global-leak", "snapstart-hazard", "defer-import",
    ]  # fmt: skip
    assert stats.malformed == 0
    assert stats.ignored == 1  # the metrics line


def test_json_output_gzip_and_duplicates_across_sources(tmp_path, capsys):
    # GIVEN the same export twice: gzip-compressed, and plain in a folder
    function = known_function()
    function.write(tmp_path / "otlp.jsonl.gz", gz=True)
    folder = tmp_path / "copy"
    folder.mkdir()
    function.write(folder / "otlp.jsonl")
    # WHEN the CLI reads both, as JSON
    assert main(["report", str(tmp_path / "otlp.jsonl.gz"), str(folder), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # THEN each invocation, INIT and event is counted once
    for key, value in EXPECTED.items():
        assert report[key] == value, key


def test_text_output_names_each_figure(tmp_path, capsys):
    path = known_function().write(tmp_path / "otlp.jsonl")
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "invocations 8, environments 4" in text
    assert "starts: cold 2, warm 4, provisioned 1, restored 1" in text
    assert "cold-start ratio (cold + restored): 37.5%" in text
    assert "INIT duration: p50 200.0 ms, p90 400.0 ms, p99 400.0 ms, max 400.0 ms" in text
    assert "reuse (invocations per environment): max 4, p50 1; 4, 2, 1, 1" in text
    assert "idle (frozen) between invocations: p50 0.990 s, p99 1.990 s" in text
    assert "INIT failures 1, errors 1, timeouts 1" in text
    assert "advice (4):" in text
    assert "read 10 lines from 1 sources: " in text
    assert "0 malformed" in text


def test_import_spans_batched_apart_from_their_trace_are_attributed(tmp_path):
    # GIVEN a collector that put an INIT's import spans on the line before its trace's spans
    f = Function()
    f.invoke("env-a", 0.0, imports=(("boto3", 0.12, BOTO3),))
    request = json.loads(f.lines[0])
    spans = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
    imports = [s for s in spans if s["name"] == "lambda.import"]
    others = [s for s in spans if s["name"] != "lambda.import"]
    lines = []
    for batch in (imports, others):
        copy = json.loads(f.lines[0])
        copy["resourceSpans"][0]["scopeSpans"][0]["spans"] = batch
        lines.append(json.dumps(copy))
    (tmp_path / "split.jsonl").write_text("\n".join(lines) + "\n")
    summary, stats = summarise([str(tmp_path / "split.jsonl")])
    assert summary.to_json()["slowest_imports"] == [
        {"module": "boto3", "p50_s": 0.12, "environments": 1}
    ]
    assert stats.unattributed_imports == 0


def test_percentiles_stay_close_beyond_the_exact_limit():
    from lifecycle_probe.report.summary import EXACT_VALUES, Distribution

    values = Distribution()
    for index in range(1, 3 * EXACT_VALUES + 1):
        values.add(index / 1000)
    top = 3 * EXACT_VALUES / 1000
    assert values.percentile(50) == pytest.approx(top / 2, rel=0.005)
    assert values.percentile(99) == pytest.approx(top * 0.99, rel=0.005)
    assert values.maximum == top
