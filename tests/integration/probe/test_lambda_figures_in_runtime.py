"""Lambda's own figures (Telemetry API) and SnapStart's two phases, exported by the probe in
real runtime processes (awslambdaric) under the local Lambda, compared with the local
Lambda's REPORT lines and ground truth.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lifecycle_probe.environment import clock_tick_ns
from lifecycle_probe.lambda_figures import INIT_AGREEMENT_MS
from lifecycle_probe.report import summarise
from tests.emf_spec import json_lines, metric_values
from tests.integration.probe.otlp import attributes, read_otlp, total

pytestmark = pytest.mark.integration

HANDLERS = Path(__file__).resolve().parents[1] / "fixtures" / "probe_handlers"
FUNCTION = "figures-fn"
# The runtime's request for work leaves the process a moment after the probe notes it:
# one local HTTP round trip, generously bounded for a loaded 2-core machine.
SIGNAL_TO_SERVER_NS = 250_000_000
# How much longer than the runtime's INIT the slow extension keeps Lambda's INIT going.
SLOW_EXTENSION_S = 0.4


def run(local_lambda, tmp_path, env=None, **options):
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(
        "lambda_figures.handler",
        HANDLERS,
        function_name=FUNCTION,
        env={
            "LIFECYCLE_PROBE_EXPORTER": "otlp-file,emf",
            "LIFECYCLE_PROBE_OTLP_FILE": str(path),
            **(env or {}),
        },
        log_dir=tmp_path / "logs",
        **options,
    )
    return emulator, path


def invoke_chain(emulator, count):
    """``count`` invocations, each waiting for Lambda's figures of the one before."""
    results = [emulator.invoke({})]
    for _ in range(count - 1):
        results.append(emulator.invoke({"wait_for": results[-1].request_id}))
    for result in results:
        assert result.outcome == "ok", result.error
    return results


def invocation_spans(spans):
    return [s for s in spans if s["name"] == FUNCTION]


def platform_reports(spans) -> dict[str, dict[str, Any]]:
    """The ``lifecycle.platform.report`` events of every invocation span, by the request
    they report on; each request is reported once."""
    found: dict[str, dict[str, Any]] = {}
    for span in invocation_spans(spans):
        for event in span.get("events", []):
            if event["name"] == "lifecycle.platform.report":
                attrs = attributes(event)
                request_id = attrs["faas.invocation_id"]
                assert request_id not in found, f"{request_id} reported twice"
                found[request_id] = {**attrs, "exported_by": span["attrs"]["faas.invocation_id"]}
    return found


def report_line(emulator, result) -> str:
    line: str = next(
        line
        for line in emulator.logs(result.environment).splitlines()
        if line.startswith(f"REPORT RequestId: {result.request_id}")
    )
    return line


def figure(line: str, name: str) -> float:
    match = re.search(rf"\b{name}: ([0-9.]+) (?:ms|MB)", line)
    assert match is not None, (name, line)
    return float(match.group(1))


def histogram(points, metric):
    """(count, sum) of a histogram's delta points."""
    chosen = [p for p in points if p["metric"] == metric]
    return sum(int(p["count"]) for p in chosen), sum(float(p["sum"]) for p in chosen)


def emf_documents(emulator, result):
    import json

    documents = []
    for line in emulator.logs(result.environment).splitlines():
        start = line.find('{"_aws"')
        if start >= 0:
            documents.append(json.loads(line[start:]))
    return documents


def test_lambdas_figures_are_exported_as_its_report_gave_them(local_lambda, tmp_path):
    # GIVEN a probed function under the local Lambda, the Telemetry API on by default
    emulator, path = run(local_lambda, tmp_path, memory_mb=192)
    # WHEN it is invoked three times, each invocation waiting for the previous one's report
    first, second, third = invoke_chain(emulator, 3)
    assert [first.response["subscribed"], second.response["arrived"]] == [True, True]
    assert third.response["arrived"] is True
    emulator.close()
    spans, points = read_otlp(path)
    reports = platform_reports(spans)
    # THEN each reported request's figures are those of the local Lambda's REPORT line
    assert {first.request_id, second.request_id} <= set(reports)
    for result in (first, second):
        reported = reports[result.request_id]
        line = report_line(emulator, result)
        assert reported["lifecycle.platform.duration_ms"] == pytest.approx(
            (result.end_ns - result.delivered_ns) / 1e6, abs=1e-3
        )
        assert reported["lifecycle.platform.billed_duration_ms"] == figure(line, "Billed Duration")
        assert reported["lifecycle.platform.max_memory_used_mb"] == figure(line, "Max Memory Used")
        assert reported["lifecycle.platform.max_memory_used_mb"] > 0
        assert "lifecycle.platform.restore_duration_ms" not in reported
        # a request's figures reach the export of the same or a later invocation
        order = [first.request_id, second.request_id, third.request_id]
        assert order.index(reported["exported_by"]) >= order.index(result.request_id)
    # the INIT belongs to the first request only, as Lambda's REPORT line says
    init_ms = reports[first.request_id]["lifecycle.platform.init_duration_ms"]
    assert init_ms == pytest.approx(first.init_duration_ms, abs=1e-3)
    assert init_ms == pytest.approx(figure(report_line(emulator, first), "Init Duration"), abs=0.01)
    assert "lifecycle.platform.init_duration_ms" not in reports[second.request_id]
    # the metrics carry the same figures, once per reported request
    every = list(reports.values())
    assert histogram(points, "lifecycle.platform.billed_duration") == (
        len(every),
        pytest.approx(sum(r["lifecycle.platform.billed_duration_ms"] for r in every)),
    )
    assert histogram(points, "lifecycle.platform.max_memory_used") == (
        len(every),
        pytest.approx(sum(r["lifecycle.platform.max_memory_used_mb"] for r in every)),
    )
    assert histogram(points, "lifecycle.platform.init_duration") == (
        1,
        pytest.approx(init_ms / 1000, abs=1e-6),
    )
    # and the probe's own INIT agrees with Lambda's: nothing counted
    (init_span,) = [s for s in spans if s["name"] == "lambda.init"]
    probe_ms = (int(init_span["endTimeUnixNano"]) - int(init_span["startTimeUnixNano"])) / 1e6
    assert abs(probe_ms - init_ms) <= INIT_AGREEMENT_MS
    assert total(points, "lifecycle.init.disagreements") == 0
    # EMF has them too, in the documents of the exports that carried them
    emf = [metric_values(d) for d in emf_documents(emulator, first)]
    assert sorted(v for d in emf for v in d.get("BilledDuration", [])) == sorted(
        float(r["lifecycle.platform.billed_duration_ms"]) for r in every
    )
    assert [v for d in emf for v in d.get("PlatformInitDuration", [])] == [
        pytest.approx(init_ms, abs=1e-3)
    ]
    assert not [d for d in emf if "InitDisagreements" in d]
    # no payload and no credential: the events carry ids and numbers only
    assert all(
        set(r) - {"exported_by"}
        <= {
            "faas.invocation_id",
            "lifecycle.platform.duration_ms",
            "lifecycle.platform.billed_duration_ms",
            "lifecycle.platform.max_memory_used_mb",
            "lifecycle.platform.init_duration_ms",
        }
        for r in every
    )


def test_a_disagreement_between_lambdas_init_and_the_probes_is_counted(local_lambda, tmp_path):
    # GIVEN a function whose own extension asks for its first event 0.4 s after
    # registering: Lambda's INIT lasts until then, the runtime's (the probe's) does not
    emulator, path = run(
        local_lambda, tmp_path, env={"FIGURES_SLOW_EXTENSION_S": str(SLOW_EXTENSION_S)}
    )
    # WHEN its report has reached an export
    first, _, _ = invoke_chain(emulator, 3)
    emulator.close()
    spans, points = read_otlp(path)
    lambda_ms = platform_reports(spans)[first.request_id]["lifecycle.platform.init_duration_ms"]
    assert lambda_ms == pytest.approx(first.init_duration_ms, abs=1e-3)
    (init_span,) = [s for s in spans if s["name"] == "lambda.init"]
    probe_ms = (int(init_span["endTimeUnixNano"]) - int(init_span["startTimeUnixNano"])) / 1e6
    # THEN the two differ by most of the extension's delay (it began counting during the
    # runtime's INIT), far beyond the tolerance
    assert (
        2 * INIT_AGREEMENT_MS < lambda_ms - probe_ms <= SLOW_EXTENSION_S * 1000 + INIT_AGREEMENT_MS
    )
    # and the disagreement is counted once, in OTLP and EMF
    assert total(points, "lifecycle.init.disagreements") == 1
    emf = [metric_values(d) for d in emf_documents(emulator, first)]
    assert [v for d in emf for v in d.get("InitDisagreements", [])] == [1.0]
    # with one warning line in the environment's log, naming both figures
    warnings = [
        line
        for line in emulator.logs(first.environment).splitlines()
        if "INIT duration and the probe's disagree" in line
    ]
    assert len(warnings) == 1
    assert f"Lambda reported {lambda_ms:.1f} ms (request {first.request_id})" in warnings[0]
    # (the warning's figure is rounded to 3 decimals, then shown with one: within 0.05 ms
    # of the span's, which may round to the other side of a tenth)
    measured = re.search(r"the probe measured (\d+\.\d) ms", warnings[0])
    assert measured is not None
    assert float(measured.group(1)) == pytest.approx(probe_ms, abs=0.051)


def test_snapstart_exports_the_init_before_the_snapshot_and_the_restore(local_lambda, tmp_path):
    # GIVEN a SnapStart function: INIT, a snapshot held 0.3 s, then a restore
    emulator, path = run(
        local_lambda,
        tmp_path,
        env={"AWS_LAMBDA_LOG_FORMAT": "JSON"},
        init_type="snap-start",
        snapshot_pause_s=0.3,
    )
    [held] = emulator.pre_initialise(1, "snap-start")
    # WHEN the restored environment serves two requests
    restored, _ = invoke_chain(emulator, 2)
    assert restored.start_type_truth == "restored"
    env = emulator.environment(held.id)
    emulator.close()
    spans, points = read_otlp(path)
    first_span = next(
        s
        for s in invocation_spans(spans)
        if s["attrs"]["faas.invocation_id"] == restored.request_id
    )
    assert first_span["attrs"]["lifecycle.start"] == "restored"
    assert first_span["attrs"]["faas.coldstart"] is True
    environment_id = first_span["attrs"]["lifecycle.environment.id"]
    (init_span,) = [s for s in spans if s["name"] == "lambda.init"]
    (restore_span,) = [s for s in spans if s["name"] == "lambda.restore"]
    # THEN lambda.init is the INIT before the snapshot, with its own timestamps: from the
    # process start (within one tick before the spawn) to the before-snapshot hook, just
    # before the runtime asked for restore/next
    init_start, init_end = int(init_span["startTimeUnixNano"]), int(init_span["endTimeUnixNano"])
    assert env.spawn_start_ns - clock_tick_ns() <= init_start <= env.spawn_end_ns
    assert env.first_next_ns is not None
    assert 0 <= env.first_next_ns - init_end < SIGNAL_TO_SERVER_NS
    assert (
        init_span["attrs"]["lifecycle.init.start_source"],
        init_span["attrs"]["lifecycle.init.end_source"],
    ) == ("process", "snapshot")
    assert init_span["attrs"]["lifecycle.restored"] is True
    # and lambda.restore the restore: from the after-restore hook to the runtime's first
    # request after it; the snapshot's pause is in neither
    restore_start = int(restore_span["startTimeUnixNano"])
    restore_end = int(restore_span["endTimeUnixNano"])
    assert env.restore_done_ns is not None
    assert env.restored_next_ns is not None
    assert restore_start >= env.restore_done_ns
    assert 0 <= env.restored_next_ns - restore_end < SIGNAL_TO_SERVER_NS
    assert restore_span["attrs"]["lifecycle.restore.end_source"] == "runtime"
    assert restore_start - init_end >= 300_000_000
    # both in the restored invocation's trace, under its span, in the new environment
    for span in (init_span, restore_span):
        assert span["traceId"] == first_span["traceId"]
        assert span["parentSpanId"] == first_span["spanId"]
        assert span["attrs"]["lifecycle.environment.id"] == environment_id
    # the metrics: faas.init_duration is the INIT before the snapshot, the restore its own
    init_s = (init_end - init_start) / 1e9
    restore_s = (restore_end - restore_start) / 1e9
    assert histogram(points, "faas.init_duration") == (1, pytest.approx(init_s, abs=1e-6))
    assert histogram(points, "lifecycle.restore_duration") == (
        1,
        pytest.approx(restore_s, abs=1e-6),
    )
    # EMF: InitDuration and RestoreDuration from the probe's own measures
    emf = [metric_values(d) for d in emf_documents(emulator, restored)]
    assert [v for d in emf for v in d.get("InitDuration", [])] == [
        pytest.approx(init_s * 1000, abs=1e-3)
    ]
    assert [v for d in emf for v in d.get("RestoreDuration", [])] == [
        pytest.approx(restore_s * 1000, abs=1e-3)
    ]
    # the INIT report line gives both
    (init_report,) = [
        line
        for line in json_lines(emulator.logs(restored.environment))
        if line.get("lifecycle_probe") == "init_report"
    ]
    assert init_report["init_duration_ms"] == pytest.approx(init_s * 1000, abs=1e-3)
    assert init_report["restore_duration_ms"] == pytest.approx(restore_s * 1000, abs=1e-3)
    # Lambda reports the same two phases separately, and its INIT agrees with the probe's
    reported = platform_reports(spans)[restored.request_id]
    assert reported["lifecycle.platform.init_duration_ms"] == pytest.approx(
        env.init_duration_ms, abs=1e-3
    )
    assert reported["lifecycle.platform.restore_duration_ms"] == pytest.approx(
        env.restore_duration_ms, abs=1e-3
    )
    assert abs(reported["lifecycle.platform.init_duration_ms"] - init_s * 1000) <= INIT_AGREEMENT_MS
    # the probe's restore sits inside Lambda's (which starts at the thaw)
    assert restore_s * 1000 <= reported["lifecycle.platform.restore_duration_ms"]
    assert total(points, "lifecycle.init.disagreements") == 0
    # AND the report takes the restore as this environment's start, from OTLP as from EMF:
    # the INIT before the snapshot ran once, at publish time, and is no restored
    # environment's (read as one, it would count once per restore, imports and all); and
    # Lambda's restore figure, which the export has, not the probe's shorter one
    from_otlp, stats = summarise([str(path)])
    # (the function's log: EMF documents and the probe's JSON INIT report line)
    from_emf, _ = summarise([], emulator.logs(restored.environment).splitlines())
    assert stats.malformed == 0
    for summary in (from_otlp, from_emf):
        report = summary.to_json()
        assert (report["environments"], report["starts"]) == (1, {"restored": 1, "warm": 1})
        assert report["init_duration_s"]["max"] == pytest.approx(
            env.restore_duration_ms / 1000, abs=2e-6
        )
        assert report["start_cost"] == {"init": 0, "restore_lambda": 1, "restore_probe": 0}
        assert report["slowest_imports"] == []
