"""The report as text, for a terminal."""

from __future__ import annotations

from typing import Any

from lifecycle_probe.report.reader import ReadStats
from lifecycle_probe.report.summary import start_cost_title

__all__ = ["read_note", "render"]

# Names, types and messages in the report come from the input: a control character among
# them would reach the terminal as an escape sequence (clear the screen, set the window's
# title), so C0 and C1 controls and DEL are shown escaped (``\x1b``); newlines between the
# report's lines are its own.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def _visible(lines: list[str]) -> str:
    return "\n".join(line.translate(_CONTROLS) for line in lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def render(report: dict[str, Any], stats: ReadStats | None = None) -> str:
    """The text report of :meth:`Summary.to_json`'s object."""
    out: list[str] = []
    add = out.append
    ratio = report["cold_start_ratio"]
    add(f"invocations {report['invocations']}, environments {report['environments']}")
    starts = ", ".join(f"{k} {v}" for k, v in report["starts"].items()) or "none"
    add(f"starts: {starts}")
    if ratio is not None:
        add(f"cold-start ratio (cold + restored): {ratio:.1%}")
    init = report["init_duration_s"]
    add(
        f"{start_cost_title(report)}: p50 {_ms(init['p50'])}, p90 {_ms(init['p90'])}, "
        f"p99 {_ms(init['p99'])}, max {_ms(init['max'])}"
    )
    if report["slowest_imports"]:
        add("slowest imports at INIT (own time, p50 over environments):")
        for row in report["slowest_imports"]:
            add(f"  {row['module']:<40} {_ms(row['p50_s']):>10}  in {row['environments']} env")
    reuse = report["reuse"]
    if reuse["max"] is not None:
        depths = ", ".join(str(n) for n in list(reuse["per_environment"].values())[:20])
        more = len(reuse["per_environment"]) - 20
        add(
            f"reuse (invocations per environment): max {reuse['max']}, p50 {reuse['p50']:g}; "
            f"{depths}{f', ... ({more} more)' if more > 0 else ''}"
        )
    idle = report["idle_s"]
    add(f"idle (frozen) between invocations: p50 {_s(idle['p50'])}, p99 {_s(idle['p99'])}")
    if report["stale_connections"]:
        add("stale connections:")
        for row in report["stale_connections"]:
            add(f"  {row['client']:<30} {row['outcome']:<9} {row['count']}")
    else:
        add("stale connections: none")
    if report["global_leaks"]:
        add("leaked request state:")
        for row in report["global_leaks"]:
            add(
                f"  {row['module']}.{row['name']}: reported {row['count']} times, in "
                f"{row['environments']} environments (first at invocation "
                f"{row['first_seen_seq'] if row['first_seen_seq'] is not None else '?'})"
            )
    else:
        add("leaked request state: none reported")
    add(
        f"INIT failures {report['init_failures']}, errors {report['errors']}, "
        f"timeouts {report['timeouts']}"
    )
    add("")
    if report["advice"]:
        add(f"advice ({len(report['advice'])}):")
        for number, item in enumerate(report["advice"], 1):
            add(f"{number}. {item['title']}")
            add(f"   evidence: {item['evidence']}")
            add(f"   expected gain: {item['expected_gain']}")
            add(f"   change: {item['action']}")
    else:
        add("advice: none (nothing in these records calls for a change)")
    text = _visible(out)
    if stats is not None:
        text += "\n\n" + read_note(stats)  # (escaped already)
    return text + "\n"


def read_note(stats: ReadStats) -> str:
    """One line on what was read, with the malformed lines (never silently dropped)."""
    note = (
        f"read {stats.lines} lines from {len(stats.sources)} sources: {stats.records} records, "
        f"{stats.ignored} lines not the probe's, {stats.malformed} malformed"
    )
    if stats.unattributed_imports:
        note += f", {stats.unattributed_imports} import spans without their trace"
    lines = [note] + [f"  malformed: {example}" for example in stats.malformed_examples]
    return _visible(lines)
