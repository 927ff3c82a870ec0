"""A SnapStart environment's start cost in the report: Lambda's restore figure when the
export has it, else the probe's restore, and named as a restore, never as INIT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lifecycle_probe.report import summarise
from lifecycle_probe.report.text import render
from tests.report.synthetic import T0_NS, attrs, emf_document

# What the probe measures of a restore (from its after-restore hook, once Lambda has
# loaded the snapshot) and what Lambda reports of it, as in the local Lambda.
PROBE_RESTORE_S = 0.00003
LAMBDA_RESTORE_MS = 212.5


def _span(
    name: str,
    span_id: str,
    start_ns: int,
    end_ns: int,
    attributes: dict[str, Any],
    events: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    return {
        "traceId": "ab" * 16, "spanId": span_id, "name": name, "kind": 2,
        "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(end_ns),
        "attributes": attrs(attributes), "events": list(events), "status": {},
    }  # fmt: skip


def _line(spans: list[dict[str, Any]]) -> str:
    resource = {"attributes": attrs({"service.name": "orders", "faas.name": "orders"})}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]})


def _invocation(
    env: str,
    seq: int,
    at_s: float,
    *,
    start: str,
    init_type: str,
    platform: dict[str, Any] | None = None,
) -> dict[str, Any]:
    start_ns = T0_NS + int(at_s * 1e9)
    events = []
    if platform is not None:
        events.append(
            {"timeUnixNano": str(start_ns + 10), "name": "lifecycle.platform.report",
             "attributes": attrs(platform)}
        )  # fmt: skip
    return _span(
        "orders", f"{seq:016x}", start_ns, start_ns + 10_000_000,
        {"lifecycle.start": start, "lifecycle.invocation_seq": seq,
         "lifecycle.environment.id": env, "lifecycle.init_type": init_type,
         "lifecycle.outcome": "ok", "faas.invocation_id": f"req-{seq}"},
        tuple(events),
    )  # fmt: skip


def restored_environment(path: Path, *, lambda_figure: bool) -> Path:
    """A restored environment as the probe exports it: the INIT before the snapshot
    (``lifecycle.restored``), its restore, and Lambda's figures of the first request,
    which reach the second invocation's export."""
    restore_end = T0_NS + int(1e9)
    first = [
        _invocation("snap-1", 1, 1.0, start="restored", init_type="snap-start"),
        _span("lambda.restore", "f1", restore_end - int(PROBE_RESTORE_S * 1e9), restore_end,
              {"lifecycle.environment.id": "snap-1"}),
        _span("lambda.init", "f2", T0_NS - int(50e9), T0_NS - int(48e9),
              {"lifecycle.environment.id": "snap-1", "lifecycle.init_type": "snap-start",
               "lifecycle.restored": True}),
    ]  # fmt: skip
    platform = {"faas.invocation_id": "req-1", "lifecycle.platform.billed_duration_ms": 11}
    if lambda_figure:
        platform["lifecycle.platform.restore_duration_ms"] = LAMBDA_RESTORE_MS
    second = [
        _invocation("snap-1", 2, 2.0, start="warm", init_type="snap-start", platform=platform)
    ]
    path.write_text(_line(first) + "\n" + _line(second) + "\n")
    return path


def test_a_restored_environment_costs_lambdas_restore_figure(tmp_path):
    summary, _ = summarise([str(restored_environment(tmp_path / "o.jsonl", lambda_figure=True))])
    report = summary.to_json()
    assert report["init_duration_s"]["p50"] == LAMBDA_RESTORE_MS / 1000
    assert report["start_cost"] == {"init": 0, "restore_lambda": 1, "restore_probe": 0}
    text = render(report)
    assert "SnapStart restore duration (Lambda's figure): p50 212.5 ms" in text
    assert "INIT duration" not in text


def test_without_lambdas_figure_the_probes_restore_is_named_as_a_restore(tmp_path):
    summary, _ = summarise([str(restored_environment(tmp_path / "o.jsonl", lambda_figure=False))])
    report = summary.to_json()
    assert report["init_duration_s"]["p50"] == PROBE_RESTORE_S
    assert report["start_cost"] == {"init": 0, "restore_lambda": 0, "restore_probe": 1}
    text = render(report)
    assert "SnapStart restore duration (the probe's figure, from its after-restore hook" in text
    assert "INIT duration" not in text


def test_lambdas_restore_figure_from_emf_and_mixed_with_an_init(tmp_path):
    # GIVEN EMF: a restored environment (the probe's restore, and Lambda's figure of it
    # in the next document) and an on-demand one (its INIT; a stray restore figure in it
    # is no restore of its own)
    restored = json.loads(emf_document("snap-1", 1, "restored", end_ms=1_000))
    restored["RestoreDuration"] = [PROBE_RESTORE_S * 1000]
    restored["lifecycle_init_type"] = "snap-start"
    later = json.loads(emf_document("snap-1", 2, "warm", end_ms=2_000, idle_ms=5.0))
    later["PlatformRestoreDuration"] = [LAMBDA_RESTORE_MS]
    cold = json.loads(emf_document("cold-1", 1, "cold", end_ms=1_500, init_ms=300.0))
    cold["PlatformRestoreDuration"] = [999.0]
    path = tmp_path / "emf.log"
    path.write_text("\n".join(json.dumps(d) for d in (restored, later, cold)) + "\n")
    summary, _ = summarise([str(path)])
    report = summary.to_json()
    # THEN each environment's start is its own figure, and the title says which
    assert sorted(c.duration_s for c in summary.start_costs()) == [LAMBDA_RESTORE_MS / 1000, 0.3]
    assert report["start_cost"] == {"init": 1, "restore_lambda": 1, "restore_probe": 0}
    assert "start duration (1 INIT, 1 SnapStart restores: Lambda's figure): p50 212.5 ms" in render(
        report
    )


def console_lines_of_a_restored_environment(tmp_path: Path, *, lambda_figure: bool) -> Path:
    """What the console exporter writes for a restored environment's first invocation
    (the INIT before the snapshot, the restore) and its second (Lambda's figures of the
    first request), written by the console sink itself."""
    import io

    from lifecycle_probe import probe
    from lifecycle_probe.rare_records import PlatformFigures, RestoreRecord
    from lifecycle_probe.sinks.console import ConsoleSink
    from lifecycle_probe.testing import FakeContext, capture_records, fresh_environment

    fresh_environment()
    with capture_records() as captured:
        handler = probe(exporter="none")(lambda event, context: None)
        handler({}, FakeContext(aws_request_id="req-1"))
        handler({}, FakeContext(aws_request_id="req-2"))
    first, second = captured.records
    assert first.init is not None
    environment_id = first.facts.environment_id
    first = first.replace(
        facts=first.facts.replace(start="restored", init_type="snap-start"),
        init=first.init.replace(restored=True, init_type="snap-start"),
        restore=RestoreRecord(
            environment_id=environment_id,
            start_ns=T0_NS,
            end_ns=T0_NS + int(PROBE_RESTORE_S * 1e9),
            end_source="runtime",
            pid=7,
        ),
    )
    figures = PlatformFigures(
        request_id="req-1",
        billed_duration_ms=11,
        restore_duration_ms=LAMBDA_RESTORE_MS if lambda_figure else None,
    )
    second = second.replace(facts=second.facts.replace(init_type="snap-start"), platform=(figures,))
    stream = io.StringIO()
    ConsoleSink(stream).export(first)
    ConsoleSink(stream).export(second)
    path = tmp_path / "console.log"
    path.write_text(stream.getvalue())
    return path


def test_the_console_lines_give_a_restored_environment_its_restore_as_its_start(tmp_path):
    # GIVEN the console's lines of a restored environment, with Lambda's restore figure
    path = console_lines_of_a_restored_environment(tmp_path, lambda_figure=True)
    # WHEN the report reads them
    summary, _ = summarise([str(path)])
    report = summary.to_json()
    # THEN its start is Lambda's restore figure, never the INIT before the snapshot
    assert report["starts"] == {"restored": 1, "warm": 1}
    assert report["start_cost"] == {"init": 0, "restore_lambda": 1, "restore_probe": 0}
    assert report["init_duration_s"]["p50"] == LAMBDA_RESTORE_MS / 1000
    # AND without Lambda's figure, the probe's restore line is the start
    path = console_lines_of_a_restored_environment(tmp_path, lambda_figure=False)
    report = summarise([str(path)])[0].to_json()
    assert report["start_cost"] == {"init": 0, "restore_lambda": 0, "restore_probe": 1}
    assert report["init_duration_s"]["p50"] == PROBE_RESTORE_S
