"""The report as one self-contained HTML file: the lifecycle timeline above the tables.

One row per environment (up to ``MAX_ROWS``; beyond, the rest is one aggregated row):
its INIT bar split into its slowest imports, each invocation coloured *and* patterned by
start type (a pattern and a label say it without colour), the frozen time between them,
markers for stale connections, leaks, SnapStart hazards, errors and timeouts. Details on
hover or keyboard focus: Tab moves from row to row and to each marker, the arrow keys
step through a row's invocations. Nothing is fetched: inline CSS and script, no fonts,
and a Content-Security-Policy that forbids any request.
"""

from __future__ import annotations

from html import escape
from typing import Any

from lifecycle_probe.report.reader import ReadStats
from lifecycle_probe.report.summary import (
    START_TYPES,
    EnvironmentState,
    Segment,
    Summary,
    start_cost_title,
)
from lifecycle_probe.report.text import read_note

__all__ = ["render"]

MAX_ROWS = 1000
WIDTH = 1000  # viewBox units across the time axis
INIT_IMPORTS = 5
MIN_WIDTH = 1.2

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}
.sub{color:#444;margin:0 0 1rem}
.legend{display:flex;flex-wrap:wrap;gap:.4rem 1rem;margin:.4rem 0 .8rem;padding:0;list-style:none}
.legend li{display:flex;align-items:center;gap:.35rem}
.legend svg{width:28px;height:14px;border:1px solid #555}
.axis{display:flex;justify-content:space-between;margin-left:15rem;color:#444;font-size:12px}
.rows{border-top:1px solid #ccc}
.row{display:flex;align-items:center;height:18px;border-bottom:1px solid #eee}
.row:focus{outline:2px solid #000;outline-offset:-2px;background:#fffbe6}
.row:hover{background:#f5f5f5}
.label{flex:0 0 15rem;font:12px/1 ui-monospace,monospace;white-space:nowrap;overflow:hidden;
text-overflow:ellipsis;padding-right:.4rem}
.bars{flex:1 1 auto;height:16px;min-width:0}
.frozen{fill:url(#p-frozen)}
.init{fill:#7a7a7a}.imp{fill:#c9c9c9;stroke:#333;stroke-width:.3}
.s-cold{fill:url(#p-cold)}.s-warm{fill:#2e8540}.s-provisioned{fill:url(#p-provisioned)}
.s-proactive{fill:url(#p-proactive)}.s-restored{fill:url(#p-restored)}.s-other{fill:#999}
.agg{stroke:#000;stroke-width:.4}
.cur{stroke:#000;stroke-width:1.2}
.m{stroke:#000;stroke-width:.5}.m:focus{stroke-width:2;outline:none}
.m-stale{fill:#f0a202}.m-leak{fill:#8e24aa}.m-hazard{fill:#00838f}.m-error{fill:#d32f2f}
.m-timeout{fill:#000}
#tip{position:fixed;z-index:10;max-width:32rem;background:#111;color:#fff;padding:.35rem .5rem;
border-radius:4px;font-size:12px;pointer-events:none;white-space:pre-line}
table{border-collapse:collapse;margin:.3rem 0 1rem}
th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}td.n{text-align:right}
.advice li{margin:.2rem 0 .8rem}.advice dt{font-weight:600}.advice dd{margin:0 0 0 1rem}
.note{color:#444;white-space:pre-line;font-size:12px}
"""

_PATTERNS = """<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>
<pattern id="p-cold" width="4" height="4" patternUnits="userSpaceOnUse"
 patternTransform="rotate(45)"><rect width="4" height="4" fill="#1f5fbf"/>
<rect width="1.6" height="4" fill="#fff"/></pattern>
<pattern id="p-provisioned" width="4" height="4" patternUnits="userSpaceOnUse">
<rect width="4" height="4" fill="#6a3fb5"/><circle cx="2" cy="2" r="1" fill="#fff"/></pattern>
<pattern id="p-proactive" width="4" height="4" patternUnits="userSpaceOnUse">
<rect width="4" height="4" fill="#c2185b"/><rect width="4" height="1.4" fill="#fff"/></pattern>
<pattern id="p-restored" width="4" height="4" patternUnits="userSpaceOnUse">
<rect width="4" height="4" fill="#00897b"/><path d="M0 0L4 4M4 0L0 4" stroke="#fff"
 stroke-width=".8"/></pattern>
<pattern id="p-frozen" width="6" height="4" patternUnits="userSpaceOnUse">
<rect width="6" height="4" fill="#dde6f0"/><rect width="1" height="4" fill="#9fb3c8"/></pattern>
</defs></svg>"""

_LEGEND = {
    "cold": "cold (blue, diagonal stripes)",
    "warm": "warm (green, plain)",
    "provisioned": "provisioned (purple, dots)",
    "proactive": "proactive (pink, horizontal stripes)",
    "restored": "restored (teal, cross-hatch)",
}

_SCRIPT = """
(function(){
var tip=document.getElementById('tip');
function show(el,x,y){var t=el.getAttribute('data-tip');if(!t)return;tip.textContent=t;
tip.hidden=false;var w=tip.offsetWidth,h=tip.offsetHeight;
tip.style.left=Math.max(4,Math.min(x+12,innerWidth-w-4))+'px';
tip.style.top=Math.max(4,Math.min(y+12,innerHeight-h-4))+'px';}
function hide(){tip.hidden=true;}
function find(el){while(el&&el!==document){if(el.getAttribute&&el.getAttribute('data-tip'))
return el;el=el.parentNode;}return null;}
document.addEventListener('mouseover',function(e){var el=find(e.target);
if(el)show(el,e.clientX,e.clientY);else hide();});
document.addEventListener('focusin',function(e){var el=find(e.target);if(!el){hide();return;}
var r=el.getBoundingClientRect();show(el,r.left,r.bottom);});
document.addEventListener('focusout',hide);
document.addEventListener('keydown',function(e){
if(e.key==='Escape'){hide();return;}
var row=e.target.closest?e.target.closest('.row'):null;if(!row)return;
if(e.key==='ArrowRight'||e.key==='ArrowLeft'){
var segs=row.querySelectorAll('.inv');if(!segs.length)return;e.preventDefault();
var i=+(row.getAttribute('data-cur')||-1);
i=e.key==='ArrowRight'?Math.min(segs.length-1,i+1):Math.max(0,i-1);
var old=row.querySelector('.cur');if(old)old.classList.remove('cur');
segs[i].classList.add('cur');row.setAttribute('data-cur',i);
var r=segs[i].getBoundingClientRect();show(segs[i],r.left,r.bottom);}
else if(e.key==='ArrowDown'||e.key==='ArrowUp'){
var next=e.key==='ArrowDown'?row.nextElementSibling:row.previousElementSibling;
if(next&&next.classList.contains('row')){e.preventDefault();next.focus();}}});
// Parsed, styled and laid out (reading offsetHeight forces the layout): the time to show.
void document.body.offsetHeight;
document.body.setAttribute('data-rendered-ms',Math.round(performance.now()));
})();
"""


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


class _Axis:
    def __init__(self, first_ns: int, last_ns: int) -> None:
        self.first_ns = first_ns
        self.span_ns = max(1, last_ns - first_ns)

    def x(self, time_ns: int) -> float:
        return (time_ns - self.first_ns) / self.span_ns * WIDTH

    def width(self, start_ns: int, end_ns: int) -> float:
        return max(MIN_WIDTH, (end_ns - start_ns) / self.span_ns * WIDTH)


def _rect(cls: str, x: float, y: float, w: float, h: float, tip: str, extra: str = "") -> str:
    return (
        f'<rect class="{cls}" x="{x:.2f}" y="{y}" width="{w:.2f}" height="{h}" '
        f'data-tip="{escape(tip)}"{extra}/>'
    )


def _segment(axis: _Axis, segment: Segment) -> str:
    main = max(segment.starts.items(), key=lambda item: (item[1], item[0]))[0]
    cls = f"s-{main}" if main in START_TYPES else "s-other"
    duration = (segment.end_ns - segment.start_ns) / 1e9
    extra = ""
    if segment.count == 1:
        outcome = "error" if segment.errors else "timeout" if segment.timeouts else "ok"
        tip = f"invocation {segment.first_seq}: {main}, {_ms(duration)}, {outcome}"
    else:
        mix = ", ".join(f"{count} {start}" for start, count in sorted(segment.starts.items()))
        tip = (
            f"{segment.count} invocations (seq {segment.first_seq}-{segment.last_seq}, "
            f"aggregated): {mix}; {segment.errors} errors, {segment.timeouts} timeouts; "
            f"busy {_ms(segment.busy_ns / 1e9)} of {_ms(duration)}"
        )
        cls += " agg"
        # Paler where the environment was mostly frozen between the merged invocations.
        busy = segment.busy_ns / max(1, segment.end_ns - segment.start_ns)
        extra = f' fill-opacity="{0.35 + 0.65 * min(1.0, busy):.2f}"'
    return _rect(
        f"inv {cls}",
        axis.x(segment.start_ns),
        3,
        axis.width(segment.start_ns, segment.end_ns),
        10,
        tip,
        extra,
    )


def _environment_tip(state: EnvironmentState) -> str:
    parts = [f"environment {state.id}"]
    if state.function:
        parts.append(f"function {state.function}")
    if state.failure is not None:
        parts.append(f"INIT failed: {state.failure.error_type or 'unknown error'}")
    if state.lambda_restore is not None:
        parts.append(f"restore {_ms(state.lambda_restore.duration_s)} (Lambda's figure)")
    elif state.init is not None and state.init.restore:
        parts.append(f"restore {_ms(state.init.duration_s)} (the probe's figure)")
    elif state.init is not None:
        parts.append(f"INIT {_ms(state.init.duration_s)} ({state.init.init_type or '?'})")
    parts.append(
        f"{state.invocations} invocations, first start {state.first_start or '?'}; "
        f"{state.errors} errors, {state.timeouts} timeouts"
    )
    if state.idle_total_s:
        parts.append(f"frozen {state.idle_total_s:.2f} s in all, longest {state.idle_max_s:.2f} s")
    if state.markers_dropped:
        parts.append(f"{state.markers_dropped} more events not drawn")
    parts.append("arrow keys: step through invocations")
    return "\n".join(parts)


def _row(axis: _Axis, state: EnvironmentState) -> str:
    parts: list[str] = []
    if state.first_ns is not None and state.last_ns is not None:
        begin = state.first_ns
        if state.init is not None and state.init.end_ns is not None:
            begin = min(begin, state.init.end_ns)
        idle = (
            f"frozen between invocations: {state.idle_total_s:.3f} s in all, "
            f"longest {state.idle_max_s:.3f} s"
        )
        parts.append(_rect("frozen", axis.x(begin), 6, axis.width(begin, state.last_ns), 4, idle))
    init = state.init or state.failure
    if init is not None and init.end_ns is not None:
        start_ns = (
            init.start_ns if init.start_ns is not None else init.end_ns - int(init.duration_s * 1e9)
        )
        failed = " (failed: " + (init.error_type or "?") + ")" if init.failed else ""
        parts.append(
            _rect(
                "init",
                axis.x(start_ns),
                1,
                axis.width(start_ns, init.end_ns),
                14,
                f"INIT {_ms(init.duration_s)}, {init.init_type or '?'}{failed}",
            )
        )
        imports = sorted(state.init_imports.values(), key=lambda i: -i.self_s)[:INIT_IMPORTS]
        for record in imports:
            if record.start_ns is None or record.end_ns is None:
                continue
            parts.append(
                _rect(
                    "imp",
                    axis.x(record.start_ns),
                    4,
                    axis.width(record.start_ns, record.end_ns),
                    8,
                    f"import {record.module}: {_ms(record.self_s)} own time",
                )
            )
    for segment in sorted(state.segments, key=lambda s: s.start_ns):
        parts.append(_segment(axis, segment))
    for marker in state.markers:
        x = axis.x(marker.time_ns)
        parts.append(
            f'<path class="m m-{marker.kind}" d="M{x:.2f} 0l3 5h-6z" tabindex="0" '
            f'role="img" aria-label="{escape(marker.label)}" data-tip="{escape(marker.label)}"/>'
        )
    label = (
        f"{state.id[:12]} · {state.first_start or ('failed' if state.failure else '?')} · "
        f"{state.invocations}"
    )
    tip = _environment_tip(state)
    return (
        f'<div class="row" role="listitem" tabindex="0" data-env="{escape(state.id)}" '
        f'aria-label="{escape(tip)}" data-tip="{escape(tip)}">'
        f'<span class="label">{escape(label)}</span>'
        f'<svg class="bars" viewBox="0 0 {WIDTH} 16" preserveAspectRatio="none" '
        f'aria-hidden="true">{"".join(parts)}</svg></div>'
    )


def _aggregate_row(axis: _Axis, states: list[EnvironmentState]) -> str:
    bins = 200
    counts = [0] * bins
    for state in states:
        for segment in state.segments:
            index = min(bins - 1, max(0, int(axis.x(segment.start_ns) / WIDTH * bins)))
            counts[index] += segment.count
    peak = max(counts) or 1
    parts = []
    for index, count in enumerate(counts):
        if count:
            parts.append(
                f'<rect class="s-warm agg" x="{index * WIDTH / bins:.1f}" y="3" '
                f'width="{WIDTH / bins:.1f}" height="10" '
                f'opacity="{0.25 + 0.75 * count / peak:.2f}" '
                f'data-tip="{count} invocations"/>'
            )
    total = sum(s.invocations for s in states)
    tip = f"{len(states)} more environments, {total} invocations, aggregated"
    return (
        f'<div class="row aggregate" role="listitem" tabindex="0" aria-label="{tip}" '
        f'data-tip="{tip}"><span class="label">+{len(states)} environments</span>'
        f'<svg class="bars" viewBox="0 0 {WIDTH} 16" preserveAspectRatio="none" '
        f'aria-hidden="true">{"".join(parts)}</svg></div>'
    )


def _table(headers: list[str], rows: list[list[Any]], caption: str) -> str:
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{escape(str(c))}</td>'
            if isinstance(c, int | float)
            else f"<td>{escape(str(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><caption>{escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _tables(report: dict[str, Any]) -> str:
    out = []
    starts = report["starts"]
    ratio = report["cold_start_ratio"]
    out.append(
        _table(
            ["start type", "invocations"],
            [[k, v] for k, v in starts.items()]
            + [["cold-start ratio", "-" if ratio is None else f"{ratio:.1%}"]],
            "Starts",
        )
    )
    init = report["init_duration_s"]
    out.append(
        _table(
            ["p50", "p90", "p99", "max"],
            [[_ms(init[k]) for k in ("p50", "p90", "p99", "max")]],
            start_cost_title(report),
        )
    )
    if report["slowest_imports"]:
        out.append(
            _table(
                ["module", "own time p50", "environments"],
                [
                    [r["module"], _ms(r["p50_s"]), r["environments"]]
                    for r in report["slowest_imports"]
                ],
                "Slowest imports at INIT",
            )
        )
    reuse = report["reuse"]
    top = list(reuse["per_environment"].items())[:20]
    out.append(
        _table(
            ["environment", "invocations"],
            [[env, count] for env, count in top],
            f"Reuse: max {reuse['max']}, p50 {reuse['p50']} invocations per environment"
            + (" (top 20)" if len(reuse["per_environment"]) > 20 else ""),
        )
    )
    idle = report["idle_s"]
    out.append(
        _table(
            ["p50", "p99"],
            [[_ms(idle["p50"]), _ms(idle["p99"])]],
            "Idle (frozen) time between invocations",
        )
    )
    out.append(
        _table(
            ["client", "outcome", "count"],
            [[r["client"], r["outcome"], r["count"]] for r in report["stale_connections"]],
            "Stale connections" + ("" if report["stale_connections"] else ": none"),
        )
    )
    out.append(
        _table(
            ["global", "invocations", "environments"],
            [
                [f"{r['module']}.{r['name']}", r["count"], r["environments"]]
                for r in report["global_leaks"]
            ],
            "Leaked request state" + ("" if report["global_leaks"] else ": none reported"),
        )
    )
    out.append(
        _table(
            ["INIT failures", "errors", "timeouts"],
            [[report["init_failures"], report["errors"], report["timeouts"]]],
            "Failures",
        )
    )
    return "".join(out)


def _advice(report: dict[str, Any]) -> str:
    if not report["advice"]:
        return "<p>No advice: nothing in these records calls for a change.</p>"
    items = []
    for item in report["advice"]:
        items.append(
            f"<li><dl><dt>{escape(item['title'])}</dt>"
            f"<dd><b>Evidence:</b> {escape(item['evidence'])}</dd>"
            f"<dd><b>Expected gain:</b> {escape(item['expected_gain'])}</dd>"
            f"<dd><b>Change:</b> {escape(item['action'])}</dd></dl></li>"
        )
    return f'<ol class="advice">{"".join(items)}</ol>'


def _legend() -> str:
    swatches = "".join(
        f'<li><svg viewBox="0 0 28 14" aria-hidden="true"><rect class="s-{start}" '
        f'width="28" height="14"/></svg>{escape(text)}</li>'
        for start, text in _LEGEND.items()
    )
    others = (
        '<li><svg viewBox="0 0 28 14" aria-hidden="true"><rect class="init" width="28" '
        'height="14"/><rect class="imp" x="6" y="3" width="10" height="8"/></svg>'
        "INIT (grey) with its slowest imports (light boxes)</li>"
        '<li><svg viewBox="0 0 28 14" aria-hidden="true"><rect class="frozen" y="4" '
        'width="28" height="6"/></svg>frozen between invocations (thin bar)</li>'
        "<li>markers ▼ above a row: stale connection (amber), leak (purple), "
        "SnapStart hazard (teal), error (red), timeout (black)</li>"
    )
    return f'<ul class="legend">{swatches}{others}</ul>'


def _began_ns(state: EnvironmentState) -> int:
    """When an environment began: its INIT's start, else its first invocation's."""
    for init in (state.init, state.failure):
        if init is not None and init.end_ns is not None:
            return init.start_ns if init.start_ns is not None else init.end_ns
    return state.first_ns if state.first_ns is not None else 0


def render(summary: Summary, report: dict[str, Any], stats: ReadStats | None = None) -> str:
    """The whole HTML page."""
    ordered = sorted(summary.environments.values(), key=lambda s: (_began_ns(s), s.id))
    first = [s.init.start_ns for s in ordered if s.init is not None and s.init.start_ns is not None]
    first_ns = min(
        [*first, *([summary.first_ns] if summary.first_ns is not None else [])], default=0
    )
    last_ns = summary.last_ns if summary.last_ns is not None else first_ns + 1
    axis = _Axis(first_ns, last_ns)
    drawn, rest = ordered[:MAX_ROWS], ordered[MAX_ROWS:]
    rows = "".join(_row(axis, state) for state in drawn)
    if rest:
        rows += _aggregate_row(axis, rest)
    span_s = (last_ns - first_ns) / 1e9
    ratio = report["cold_start_ratio"]
    sub = (
        f"{report['invocations']} invocations in {report['environments']} environments over "
        f"{span_s:.1f} s; cold-start ratio {'-' if ratio is None else f'{ratio:.1%}'}; "
        f"{len(report['advice'])} pieces of advice"
    )
    note = f'<p class="note">{escape(read_note(stats))}</p>' if stats is not None else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        "<title>lifecycle-probe report</title>"
        f"<style>{_STYLE}</style></head><body>"
        f'{_PATTERNS}<h1>Lambda lifecycle report</h1><p class="sub">{escape(sub)}</p>'
        '<section aria-labelledby="h-timeline"><h2 id="h-timeline">Timeline: one row per '
        "environment</h2>"
        "<p>Hover, or Tab to a row (↑/↓ between rows, ←/→ through its invocations), for "
        "details. Labels: environment · first start · invocations.</p>"
        f"{_legend()}"
        f'<div class="axis" aria-hidden="true"><span>0 s</span><span>{span_s / 2:.1f} s</span>'
        f"<span>{span_s:.1f} s</span></div>"
        f'<div class="rows" role="list" aria-label="environments">{rows}</div></section>'
        '<section aria-labelledby="h-summary"><h2 id="h-summary">Summary</h2>'
        f"{_tables(report)}</section>"
        '<section aria-labelledby="h-advice"><h2 id="h-advice">Advice</h2>'
        f"{_advice(report)}</section>{note}"
        '<div id="tip" role="tooltip" hidden></div>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
