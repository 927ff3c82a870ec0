"""``lifecycle-probe demo``: the bundled example functions through a day in the life of Lambda.

The demo runs ``functions/orders.py`` in the local Lambda (real ``awslambdaric`` runtime
processes) through a cold start, warm reuse, a freeze, a traffic spike that scales out,
provisioned and proactive initialisation, an idle reap and a SnapStart restore. The
function keeps a keep-alive connection, made at INIT, to an inventory service run here
behind a stand-in load balancer that cuts connections idle for a second: a freeze longer
than that leaves the function a stale connection, which urllib3 replaces and the probe
reports. The demo reads what the probe wrote in each environment's log and prints it
beside the local Lambda's own ground truth, then writes both as JSON lines to the output
directory, beside the OpenTelemetry export (OTLP JSON lines, the Collector file-exporter
format) that the probe's internal extension wrote after each response. It ends with
``lifecycle-probe report`` on that export: the summary, the advice, and the HTML timeline
(``report.html``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifecycle_probe.emulator import FunctionConfig, InvocationResult, LocalLambda
from lifecycle_probe.emulator.keepalive import Server
from lifecycle_probe.records import STALE_EVENT
from lifecycle_probe.sinks.console import read_lines

__all__ = ["add_arguments", "run"]

FUNCTIONS = Path(__file__).resolve().parent / "functions"
PROG = "lifecycle-probe demo"
# What the demo writes into --output-dir: these files and LOGS/<section>/env-N.log, with
# LOGS/MARKER saying the folder is the demo's (its next run replaces it).
LOGS = "logs"
OUTPUT_FILES = ("otlp.jsonl", "probe-records.jsonl", "ground-truth.jsonl", "report.html")
SECTIONS = ("on-demand", "provisioned", "proactive", "snap-start")
MARKER = ".lifecycle-probe-demo"
MARKER_TEXT = (
    "Written by lifecycle-probe demo: its next run with this --output-dir replaces this "
    "folder, unless it holds files the demo did not write.\n"
)
_ENV_LOG = re.compile(r"env-[0-9]+\.log")
PROACTIVE_GAP_MS = 400
IDLE_TIMEOUT_S = 4.0
# The inventory service's load balancer closes keep-alive connections idle this long.
INVENTORY_IDLE_TIMEOUT_S = 1.0

# The function's variables: the probe writes JSON lines to the log (console exporter) and
# OTLP JSON to a file (otlp-file), and counts an INIT that ended more than 400 ms before
# its first event as proactive.
FUNCTION_ENV = {
    "LIFECYCLE_PROBE_EXPORTER": "console,otlp-file",
    "LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS": str(PROACTIVE_GAP_MS),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` arguments to ``parser``."""
    parser.add_argument(
        "--output-dir",
        default="lifecycle-probe-demo",
        metavar="DIR",
        help="where to write the probe's records, the ground truth and the runtime logs "
        "(default: ./lifecycle-probe-demo)",
    )


Step = Callable[[LocalLambda], list[InvocationResult]]


def _on_demand_steps() -> list[tuple[str, str, Step]]:
    """The on-demand function's day: (name, what happens, action)."""
    spike = [{"items": ["fig", "pear"], "work_s": 0.3}] * 6

    def cold(emulator: LocalLambda) -> list[InvocationResult]:
        return [emulator.invoke({"items": ["apple"]})]

    def warm(emulator: LocalLambda) -> list[InvocationResult]:
        return [emulator.invoke({"items": ["pear"]}) for _ in range(3)]

    def freeze(emulator: LocalLambda) -> list[InvocationResult]:
        emulator.freeze_for(1.5)
        return [emulator.invoke({})]

    def spike_step(emulator: LocalLambda) -> list[InvocationResult]:
        return emulator.invoke_many(spike, concurrency=3)

    def reap(emulator: LocalLambda) -> list[InvocationResult]:
        emulator.freeze_for(IDLE_TIMEOUT_S + 1.0)
        return [emulator.invoke({}) for _ in range(2)]

    return [
        ("cold start", "first request: a new environment runs INIT", cold),
        ("warm reuse", "three more requests reuse the same environment", warm),
        ("freeze", "1.5 s without traffic, the environment frozen (SIGSTOP)", freeze),
        ("traffic spike", "six requests, three at a time: Lambda scales out", spike_step),
        ("idle reap", f"{IDLE_TIMEOUT_S + 1:.0f} s idle: every environment reaped", reap),
    ]


def _provisioned(emulator: LocalLambda) -> list[InvocationResult]:
    emulator.freeze_for(0.5)  # provisioned environments wait for traffic, by design
    return [emulator.invoke({}) for _ in range(2)]


def _proactive(emulator: LocalLambda) -> list[InvocationResult]:
    emulator.pre_initialise(1)
    emulator.freeze_for(PROACTIVE_GAP_MS / 1000 + 0.6)
    return [emulator.invoke({}) for _ in range(2)]


def _restored(emulator: LocalLambda) -> list[InvocationResult]:
    return [emulator.invoke({}) for _ in range(2)]


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every probe tag agrees with the local Lambda's ground truth,
    2 when the local Lambda cannot run here (no awslambdaric) or ``--output-dir`` cannot be
    used (not a folder, not writable, or holding files of the demo's names that it did not
    write), 1 when writing there failed during the run."""
    from lifecycle_probe.emulator.cli import missing_runtime_client

    missing = missing_runtime_client(PROG)
    if missing is not None:
        print(missing, file=sys.stderr)
        return 2
    output = Path(args.output_dir).resolve()
    try:
        _prepare(output)
    except _Refused as refused:
        print(f"{PROG}: error: {refused}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: --output-dir {output}: {_reason(exc)}", file=sys.stderr)
        return 2
    try:
        return _run(output)
    except OSError as exc:  # the disk filled, the folder went away mid-run
        print(f"{PROG}: error: {_reason(exc)}", file=sys.stderr)
        return 1


class _Refused(Exception):
    """The output directory holds something the demo would overwrite but did not write."""


def _reason(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def _prepare(output: Path) -> None:
    """Make ``output`` ready for a run: the previous run's output removed, nothing else.

    The demo writes its files and ``logs/`` into a folder the user names, which may hold
    their own (``--output-dir .`` in a project with a ``logs/`` folder): what it would
    overwrite or remove must be its own. Its ``logs/`` carries a marker from the moment it
    is made, and holds only the demo's section folders of ``env-N.log`` files; the other
    names are the demo's when that ``logs/`` is there. Anything else is refused.
    """
    if output.exists() and not output.is_dir():
        raise _Refused(f"--output-dir {output}: not a directory")
    logs = output / LOGS
    ours = _is_demo_logs(logs)
    if not ours:
        taken = [output / name for name in (LOGS, *OUTPUT_FILES) if _exists(output / name)]
        if taken:
            raise _Refused(
                f"--output-dir {output}: the demo would overwrite {taken[0].name}, which it "
                f"cannot tell it wrote (no {LOGS}/{MARKER}, or files it does not write "
                f"in {LOGS}/); name a new or empty folder"
            )
    # A previous run's logs would be read as this run's: start from an empty folder.
    if ours:
        shutil.rmtree(logs)
    for name in OUTPUT_FILES:
        (output / name).unlink(missing_ok=True)  # a symlink goes, never what it points to
    (output / LOGS).mkdir(parents=True)
    (output / LOGS / MARKER).write_text(MARKER_TEXT, encoding="utf-8")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _is_demo_logs(logs: Path) -> bool:
    """True when ``logs`` is a folder only the demo wrote: its marker, its sections'
    folders and their ``env-N.log`` files, nothing else (no symlink)."""
    if logs.is_symlink() or not (logs / MARKER).is_file():
        return False
    for entry in logs.iterdir():
        if entry.name == MARKER:
            continue
        if entry.name not in SECTIONS or entry.is_symlink() or not entry.is_dir():
            return False
        for log in entry.iterdir():
            if not _ENV_LOG.fullmatch(log.name) or log.is_symlink() or not log.is_file():
                return False
    return True


def _run(output: Path) -> int:
    otlp_file = output / "otlp.jsonl"
    inventory = Server(INVENTORY_IDLE_TIMEOUT_S, body=b'{"in_stock": true}')
    function_env = {
        **FUNCTION_ENV,
        "LIFECYCLE_PROBE_OTLP_FILE": str(otlp_file),
        "ORDERS_INVENTORY_URL": f"http://127.0.0.1:{inventory.port}/stock",
    }
    print("lifecycle-probe demo: example functions in the local Lambda (awslambdaric), no AWS")
    print(f"output: {output}\n")
    rows: list[tuple[str, InvocationResult]] = []
    probe_records: list[dict[str, Any]] = []
    started = time.monotonic()

    def function(init_type: str = "on-demand") -> FunctionConfig:
        return FunctionConfig(
            "orders.handler", FUNCTIONS, env=function_env, timeout_s=5, init_type=init_type
        )

    sections: list[tuple[str, FunctionConfig, dict[str, Any], list[tuple[str, str, Step]]]] = [
        ("on-demand", function(), {"idle_timeout_s": IDLE_TIMEOUT_S}, _on_demand_steps()),
        (
            "provisioned",
            function(),
            {"provisioned_concurrency": 1},
            [
                (
                    "provisioned",
                    "an environment kept initialised by provisioned concurrency",
                    _provisioned,
                )
            ],
        ),
        (
            "proactive",
            function(),
            {},
            [("proactive", "Lambda initialised an environment ahead of demand", _proactive)],
        ),
        (
            "snap-start",
            function("snap-start"),
            {"snapshot_pause_s": 0.5},
            [("snapstart", "a SnapStart function restored from its snapshot", _restored)],
        ),
    ]
    total_steps = sum(len(steps) for *_, steps in sections)
    done = 0
    try:
        for section, config, options, steps in sections:
            with LocalLambda(config, log_dir=output / LOGS / section, **options) as emulator:
                for name, description, action in steps:
                    done += 1
                    print(f"[{done}/{total_steps}] {name}: {description} ...", end="", flush=True)
                    step_started = time.monotonic()
                    results = action(emulator)
                    rows.extend((name, result) for result in results)
                    print(
                        f" {len(results)} requests, {time.monotonic() - step_started:.1f} s",
                        flush=True,
                    )
                probe_records.extend(_probe_records(emulator, section))
    finally:
        inventory.stop()

    agree = _print_table(rows, probe_records)
    _print_stale_connections(rows, probe_records)
    _write_jsonl(output / "probe-records.jsonl", probe_records)
    truth = [{"step": name, **result.to_dict()} for name, result in rows]
    _write_jsonl(output / "ground-truth.jsonl", truth)
    _print_summary(rows, probe_records, agree, time.monotonic() - started, output)
    _print_otlp_summary(otlp_file)
    _print_report(otlp_file, output / "report.html")
    return 0 if agree == len(rows) else 1


def _print_report(otlp_file: Path, html_file: Path) -> None:
    """``lifecycle-probe report`` on the demo's OTLP export, and its HTML timeline."""
    from lifecycle_probe.report import summarise, write_html
    from lifecycle_probe.report.text import render

    summary, stats = summarise([str(otlp_file)])
    report = summary.to_json()
    print(f"\n== lifecycle-probe report {otlp_file}\n")
    print(render(report, stats), end="")
    write_html(html_file, summary, report, stats)
    print(f"\nwrote {html_file}: the timeline, one row per environment, above the tables")
    print(f"where to look: open {html_file.as_uri()} in a browser; the advice above says")
    print("what to change; the JSON: lifecycle-probe report --format json " + str(otlp_file))


def _print_stale_connections(
    rows: list[tuple[str, InvocationResult]], records: list[dict[str, Any]]
) -> None:
    """The stale connections the probe reported, by the step that met them."""
    step_of = {result.request_id: step for step, result in rows}
    stale = [r for r in records if r["lifecycle_probe"] == "event" and r["name"] == STALE_EVENT]
    print()
    if not stale:
        print("stale connections: none reported")
        return
    print(f"stale connections ({len(stale)}):")
    for event in stale:
        where = f"{event.get('server.address')}:{event.get('server.port')}"
        reconnect = event.get("lifecycle.connection.reconnect_s")
        cost = "" if reconnect is None else f"; replaced in {reconnect * 1000:.1f} ms"
        print(
            f"  {step_of.get(event['request_id'], '?'):<14} {event['request_id'][:8]} "
            f"{event['lifecycle.connection.outcome']}: connection to {where} made in "
            f"{event['lifecycle.connection.created_in']}, idle "
            f"{event['lifecycle.connection.idle_s']:.2f} s{cost}"
        )


def _print_otlp_summary(path: Path) -> None:
    spans: dict[str, int] = {}
    metric_requests = 0
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            request = json.loads(line)
            metric_requests += "resourceMetrics" in request
            for resource in request.get("resourceSpans", []):
                for scope in resource["scopeSpans"]:
                    for span in scope["spans"]:
                        spans[span["name"]] = spans.get(span["name"], 0) + 1
    described = ", ".join(f"{count} {name}" for name, count in sorted(spans.items()))
    print(f"wrote {path} (OTLP JSON: {described or 'no spans'}; {metric_requests} metric exports)")


def _probe_records(emulator: LocalLambda, section: str) -> list[dict[str, Any]]:
    records = []
    for env in emulator.environments:
        for line in read_lines(emulator.logs(env.id)):
            records.append({**line, "emulator_environment": f"{section}/{env.id}"})
    return records


def _print_table(rows: list[tuple[str, InvocationResult]], records: list[dict[str, Any]]) -> int:
    by_request = {r["request_id"]: r for r in records if r["lifecycle_probe"] == "invocation"}
    init_ms = {
        r["environment_id"]: r["duration_s"] * 1000
        for r in records
        if r["lifecycle_probe"] == "init"
    }
    print()
    header = ("step", "request", "env", "truth", "probe", "seq", "idle s", "INIT ms", "")
    print("{:<14} {:<8} {:<6} {:<12} {:<12} {:>4} {:>7} {:>8} {}".format(*header))
    agree = 0
    for step, result in rows:
        line = by_request.get(result.request_id, {})
        start = line.get("start", "-")
        ok = start == result.start_type_truth
        agree += ok
        idle = line.get("idle_s")
        init = init_ms.get(line.get("environment_id", "")) if result.cold else None
        print(
            "{:<14} {:<8} {:<6} {:<12} {:<12} {:>4} {:>7} {:>8} {}".format(
                step,
                result.request_id[:8],
                result.environment,
                result.start_type_truth,
                start,
                line.get("invocation_seq", "-"),
                "-" if idle is None else f"{idle:.3f}",
                "-" if init is None else f"{init:.2f}",
                "ok" if ok else "DISAGREES",
            )
        )
    return agree


def _print_summary(
    rows: list[tuple[str, InvocationResult]],
    records: list[dict[str, Any]],
    agree: int,
    elapsed_s: float,
    output: Path,
) -> None:
    invocations = [r for r in records if r["lifecycle_probe"] == "invocation"]
    inits = [r for r in records if r["lifecycle_probe"] == "init"]
    cold = sum(1 for r in invocations if r["coldstart"])
    durations = sorted(r["duration_s"] * 1000 for r in inits)
    per_env: dict[str, int] = {}
    for record in invocations:
        per_env[record["environment_id"]] = per_env.get(record["environment_id"], 0) + 1
    print()
    total = len(rows)
    print(f"requests {total}, environments {len(inits)}, probe agrees with truth {agree}/{total}")
    if invocations:
        ratio = cold / len(invocations)
        print(f"cold-start ratio (cold + restored): {cold}/{len(invocations)} = {ratio:.0%}")
    if durations:
        print(
            "INIT duration ms: min {:.1f}, median {:.1f}, max {:.1f} (exact: {} of {})".format(
                durations[0],
                durations[len(durations) // 2],
                durations[-1],
                sum(1 for r in inits if not r["estimated"]),
                len(inits),
            )
        )
    print(
        "invocations per environment: "
        + ", ".join(str(n) for n in sorted(per_env.values(), reverse=True))
    )
    print(f"\nwrote {output / 'probe-records.jsonl'} (the probe's records, from the runtime logs)")
    print(f"wrote {output / 'ground-truth.jsonl'} (what the local Lambda observed)")
    print(f"logs of every runtime process under {output / 'logs'}; {elapsed_s:.1f} s in all")


def _write_jsonl(path: Path, items: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item, default=str) + "\n")
