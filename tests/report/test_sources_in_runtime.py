"""The report on what real runtime processes exported: through a real collector, and as logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle_probe.report import summarise
from tests.report.collector_file import FileExporter
from tests.rotel import running_rotel, wait_for

pytestmark = pytest.mark.integration

HANDLERS = Path(__file__).resolve().parents[1] / "integration" / "fixtures" / "probe_handlers"


@pytest.fixture
def rotel_to_file(tmp_path):
    """rotel-agent receiving OTLP/HTTP on 127.0.0.1 and exporting to a file writer."""
    output = tmp_path / "collector.jsonl"
    exporter = FileExporter(output)
    arguments = ("--exporter", "otlp", "--otlp-exporter-endpoint", exporter.endpoint,
                 "--otlp-exporter-protocol", "http")  # fmt: skip
    try:
        with running_rotel(tmp_path, *arguments) as endpoint:
            yield endpoint, output
    finally:
        exporter.close()


def test_report_on_a_file_written_through_a_real_collector(local_lambda, rotel_to_file):
    # GIVEN a probed function exporting OTLP/HTTP to rotel-agent, whose batches land in a file
    endpoint, output = rotel_to_file
    emulator = local_lambda(
        "traced.handler",
        HANDLERS,
        env={"LIFECYCLE_PROBE_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
    )
    # WHEN it serves a cold, a warm and a failing request
    results = [emulator.invoke({}), emulator.invoke({}), emulator.invoke({"fail": True})]
    emulator.close()
    assert [r.outcome for r in results] == ["ok", "ok", "error"]

    def all_there() -> bool:
        return output.exists() and summarise([str(output)])[0].invocations == 3

    wait_for(all_there, 30, "the collector to export three invocations")
    # THEN the report on the collector's file agrees with the local Lambda's ground truth
    summary, stats = summarise([str(output)])
    report = summary.to_json()
    assert stats.malformed == 0
    assert report["invocations"] == 3
    assert report["environments"] == 1
    assert report["starts"] == {"cold": 1, "warm": 2}
    assert report["cold_start_ratio"] == pytest.approx(1 / 3, abs=1e-6)
    assert report["errors"] == 1
    assert report["timeouts"] == 0
    assert report["reuse"]["max"] == 3
    assert 0.05 <= report["init_duration_s"]["max"] < 5
    modules = {row["module"] for row in report["slowest_imports"]}
    assert "slow_dependency" in modules
    assert report["idle_s"]["p50"] is not None


def test_report_on_emf_and_json_log_lines_of_a_log_stream(local_lambda, tmp_path):
    # GIVEN a function exporting EMF, logging JSON (so the probe's log lines are JSON)
    emulator = local_lambda(
        "traced.handler",
        HANDLERS,
        env={"LIFECYCLE_PROBE_EXPORTER": "emf", "AWS_LAMBDA_LOG_FORMAT": "JSON"},
        timeout_s=1.0,
    )
    # WHEN it serves a cold, a warm, a failing and a timed-out request, then a new cold one
    results = [
        emulator.invoke({}),
        emulator.invoke({}),
        emulator.invoke({"fail": True}),
        emulator.invoke({"sleep_s": 3}),
        emulator.invoke({}),
    ]
    assert [r.outcome for r in results] == ["ok", "ok", "error", "timeout", "ok"]
    # AND its log is saved as a CloudWatch Logs export does it: a timestamp before each line
    saved = tmp_path / "log-stream.txt"
    with saved.open("w") as out:
        for env in emulator.environments:
            for line in emulator.logs(env.id).splitlines():
                out.write(f"2026-11-30T10:00:00.000Z {line}\n")
    emulator.close()
    # THEN the report agrees with the ground truth
    summary, stats = summarise([str(saved)])
    report = summary.to_json()
    truth = emulator.truth
    assert report["environments"] == len({r.environment for r in truth}) == 2
    assert report["starts"] == {"cold": 2, "warm": 3}
    assert report["invocations"] == 5
    assert report["errors"] == 1
    assert report["timeouts"] == 1
    assert report["init_failures"] == 0
    # the INIT report lines gave INIT durations and the slowest imports
    assert report["init_duration_s"]["p50"] is not None
    assert "slow_dependency" in {row["module"] for row in report["slowest_imports"]}
    assert stats.malformed == 0
    assert stats.ignored > 0  # START/END/REPORT and the runtime's own lines
