#!/usr/bin/env python3
"""Soak: a seeded random run of the probe in the local Lambda, with every figure of
issue 11 (tag agreement, telemetry loss, added latency, memory growth per environment).

Outside the default test suite (it takes minutes). Run from the repository root::

    .venv/bin/python -m tests.soak.run_soak --invocations 20000 --seed 20261128

It runs ``tests/soak/handlers/soak_fn.py`` behind the probe's zero-code entry
(``_HANDLER=lifecycle_probe.handler.handler``, exporters ``otlp,otlp-file,console``) as two
functions, an on-demand one (with provisioned and proactive environments) and a
SnapStart one, through the seeded workload of ``tests/soak/workload.py`` (sequences,
bursts, freezes, reaps, kills, timeouts, handler exceptions, failed INITs, a collector
that refuses or hangs part of the time). Then it runs the same seed's first
``--baseline-fraction`` of events against the bare function (no probe at all) and
compares. It prints one summary table and writes ``summary.json`` (and the raw material:
environment logs, the OTLP file) under ``--out``. Only 127.0.0.1 is contacted.

Exit status: 0 when every tag agrees with the ground truth and no request's telemetry is
unaccounted for, 1 otherwise, 3 when the run overran its time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.soak import analysis
from tests.soak.collector import SoakCollector
from tests.soak.otlp_tally import tally_file
from tests.soak.workload import FLUSH_TIMEOUT_MS, TIMEOUT_S, Workload

ROOT = Path(__file__).resolve().parents[2]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--invocations", type=int, default=20000, help="requests of the probed run (default 20000)"
    )
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument(
        "--baseline-fraction",
        type=float,
        default=0.2,
        help="share of the events replayed without the probe (0: none)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=60.0,
        help="time limit of the whole soak; the workload stops at 90 %% of it",
    )
    parser.add_argument(
        "--exporters",
        default="otlp,otlp-file,console",
        help="LIFECYCLE_PROBE_EXPORTER of the probed run (console is needed)",
    )
    parser.add_argument(
        "--flush-timeout-ms",
        type=int,
        default=FLUSH_TIMEOUT_MS,
        help="LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS of the probed run",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default build/soak-SEED-N)"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the environment logs and the OTLP file"
    )
    return parser.parse_args(argv)


def _watchdog(limit_s: float) -> None:
    def overrun() -> None:
        print(f"soak: overran its time limit of {limit_s:.0f} s; stopping", flush=True)
        os._exit(3)

    timer = threading.Timer(limit_s, overrun)
    timer.daemon = True
    timer.start()


def _snapshot_code(target: Path) -> Path:
    """Copy ``src/lifecycle_probe`` to ``target``: every runtime process of the soak
    imports this copy, so that edits to the checkout during a long run change nothing."""
    shutil.copytree(
        ROOT / "src" / "lifecycle_probe",
        target / "lifecycle_probe",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return target


def _source_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--short", "--", "src/lifecycle_probe")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_probe_files": changed.splitlines(),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if "console" not in args.exporters.split(","):
        print("soak: --exporters must include console (the tags are read from it)")
        return 2
    out: Path = args.out or ROOT / "build" / f"soak-{args.seed}-{args.invocations}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    limit_s = args.max_minutes * 60
    _watchdog(limit_s + 120)
    started = time.monotonic()
    budget_s = limit_s * 0.9

    # (the state of the checkout when the code was copied: what the runtimes run)
    source = _source_state()
    code = _snapshot_code(out / "code")
    collector = SoakCollector().start()
    print(
        f"soak: seed {args.seed}, {args.invocations} requests with the probe "
        f"(collector {collector.endpoint}), output {out}",
        flush=True,
    )
    probed = Workload(
        seed=args.seed,
        invocations=args.invocations,
        probed=True,
        out=out / "probed",
        max_s=budget_s * (1 - args.baseline_fraction * 0.8),
        collector=collector,
        exporters=args.exporters,
        code=code,
        flush_timeout_ms=args.flush_timeout_ms,
    ).run()
    collector.set_mode("ok")
    time.sleep(0.5)  # the last answers
    collector.stop()
    print(f"soak: probed run done in {probed.elapsed_s:.0f} s", flush=True)
    file_tally = tally_file(out / "probed" / "otlp.jsonl")

    baseline = None
    if args.baseline_fraction > 0:
        count = max(1, int(args.invocations * args.baseline_fraction))
        left_s = budget_s - (time.monotonic() - started)
        baseline = Workload(
            seed=args.seed,
            invocations=count,
            probed=False,
            out=out / "bare",
            max_s=max(10.0, left_s),
            collector=None,
            exporters="",
            code=code,
        ).run()
        print(f"soak: bare twin done in {baseline.elapsed_s:.0f} s", flush=True)

    summary = summarise(args, source, probed, baseline, collector, file_tally)
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_table(summary)
    print(f"summary: {out / 'summary.json'}")
    if not args.keep_logs:
        for kept in ("probed/logs", "bare/logs", "probed/otlp.jsonl"):
            path = out / kept
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
    ok = (
        summary["tags"]["agreement_pct"] == 100.0
        and not summary["tags"]["problems"]
        and all(
            loss["categories"].get("UNACCOUNTED", 0) == 0
            for loss in summary["telemetry_loss"].values()
        )
    )
    return 0 if ok else 1


def summarise(
    args: argparse.Namespace,
    source: dict[str, Any],
    probed: Any,
    baseline: Any,
    collector: SoakCollector,
    file_tally: Any,
) -> dict[str, Any]:
    tallies = {}
    exporters = args.exporters.split(",")
    if "otlp" in exporters:
        tallies["collector"] = collector.tally
    if "otlp-file" in exporters:
        tallies["otlp-file"] = file_tally
    return {
        "command": "python -m tests.soak.run_soak " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "source": source,
        "configuration": {
            "exporters": args.exporters,
            "entry": "zero-code (_HANDLER=lifecycle_probe.handler.handler)",
            "flush": "after-response (internal extension)",
            "flush_timeout_ms": args.flush_timeout_ms,
            "function_timeout_s": TIMEOUT_S,
            "baseline_fraction": args.baseline_fraction,
        },
        "run": analysis.run_facts(probed),
        "baseline_run": analysis.run_facts(baseline) if baseline is not None else None,
        "collector": {
            "mode_switches": len(collector.mode_log) - 1,
            "answers": collector.answers,
            "requests": dict(collector.tally.requests),
        },
        "tags": analysis.tag_agreement(probed),
        "otlp_tags": {name: analysis.otlp_tag_agreement(probed, t) for name, t in tallies.items()},
        "telemetry_loss": {
            name: analysis.telemetry_loss(
                probed, t, collector.mode_at if name == "collector" else None
            )
            for name, t in tallies.items()
        },
        "latency": analysis.added_latency(probed, baseline),
        "memory": {
            "probe": analysis.memory_growth(probed),
            "bare": analysis.memory_growth(baseline) if baseline is not None else None,
        },
    }


def _fmt(value: Any, width: int = 9) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:.2f}".rjust(width)
    return str(value).rjust(width)


def print_table(summary: dict[str, Any]) -> None:
    run = summary["run"]
    print()
    print(
        f"== soak, seed {summary['seed']}: {run['requests']} requests "
        f"({', '.join(f'{k} {v}' for k, v in run['requests_per_function'].items())}) over "
        f"{run['environments']} environments in {run['elapsed_s']:.0f} s"
        + (f" (STOPPED EARLY: {run['stopped_early']})" if run["stopped_early"] else "")
    )
    print(f"   environments by end: {run['environments_by_end']}")
    print(f"   outcomes: {run['outcomes']}; failed INITs: {run['init_failures']}")
    tags = summary["tags"]
    print("-- tag agreement with the ground truth (console records)")
    print(f"   {'start':<12}{'requests':>9}{'agree':>9}{'disagree':>9}{'missing':>9}{'  %':>9}")
    for start, row in tags["per_start_type"].items():
        print(
            f"   {start:<12}{_fmt(row['requests'])}{_fmt(row['agree'])}"
            f"{_fmt(row['disagree'])}{_fmt(row['missing'])}{_fmt(row['agreement_pct'])}"
        )
    print(
        f"   {'all':<12}{_fmt(tags['requests'])}{_fmt(tags['agree'])}"
        f"{'':>27}{_fmt(tags['agreement_pct'])}"
    )
    for name, otlp in summary["otlp_tags"].items():
        print(f"   {name} spans: {otlp['agree']}/{otlp['spans']} lifecycle.start agree")
    for problem in tags["problems"][:10]:
        print(f"   ! {problem}")
    print("-- telemetry loss (per request id, per destination)")
    for name, loss in summary["telemetry_loss"].items():
        print(f"   {name}:")
        for category, count in loss["categories"].items():
            print(f"     {category:<62}{count:>8}")
        print(
            f"     failed INITs exported (lambda.init, error): "
            f"{loss['init_failures_exported']}/{loss['init_failures']}"
        )
        print(f"     dropped counted by reason: {loss['dropped_by_reason']}")
        print(
            f"     metric points: invocations unaccounted "
            f"{loss['metrics_unaccounted_invocations']} "
            f"(by environment end: {loss['metrics_unaccounted_by_environment_end']})"
        )
        for cause in loss["unaccounted_causes"][:12]:
            print(
                f"     ! unaccounted {cause['count']}: outcome {cause['outcome']}, "
                f"environment {cause['environment_end']}; collector "
                f"{cause['collector_mode_at_request']} at the request, "
                f"{cause['collector_mode_at_environment_end']} at the environment's end"
            )
    latency = summary["latency"]
    print("-- added latency, ms (probe - bare twin, same seed; handler sleep subtracted)")
    print(f"   window: the first {latency['window_events']} events of the seed")
    print(
        f"   {'start':<12}{'measure':<10}{'n':>7}{'p50 probe':>10}{'p50 bare':>10}"
        f"{'Δp50':>8}{'p99 probe':>10}{'p99 bare':>10}{'Δp99':>8}"
    )
    for group, row in latency["per_start_type"].items():
        for measure, e in row.items():
            print(
                f"   {group:<12}{measure:<10}{e['n_probe']:>7}{_fmt(e['p50_probe_ms'], 10)}"
                f"{_fmt(e['p50_bare_ms'], 10)}{_fmt(e['p50_delta_ms'], 8)}"
                f"{_fmt(e['p99_probe_ms'], 10)}{_fmt(e['p99_bare_ms'], 10)}"
                f"{_fmt(e['p99_delta_ms'], 8)}"
            )
    paired = latency["paired_duration_delta_ms"]
    if paired:
        print(
            f"   paired by event ({paired['pairs']}): duration delta p50 {paired['p50']} ms, "
            f"p99 {paired['p99']} ms; warm-warm ({paired['warm_pairs']}): "
            f"p50 {paired['warm_p50']} ms, p99 {paired['warm_p99']} ms"
        )
    print("-- memory growth per environment (VmRSS, environments with >= 20 invocations)")
    for name, memory in summary["memory"].items():
        if memory is None:
            continue
        print(
            f"   {name:<6} {memory['environments']:>4} environments: slope p50 "
            f"{memory['slope_kb_per_invocation_p50']} kB/invocation, max "
            f"{memory['slope_kb_per_invocation_max']}; (last - 5th) p50 "
            f"{memory['last_minus_5th_kb_per_invocation_p50']}, max "
            f"{memory['last_minus_5th_kb_per_invocation_max']}; longest environment "
            f"{memory['max_invocations_in_one_environment']} invocations"
        )
    print()


if __name__ == "__main__":
    sys.exit(main())
