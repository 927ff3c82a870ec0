"""The HTML timeline, opened in headless Chromium."""

from __future__ import annotations

import re
import time

from lifecycle_probe.cli import main
from lifecycle_probe.report import summarise
from lifecycle_probe.report.html import render
from lifecycle_probe.report.records import Event, Import, Init, Invocation
from lifecycle_probe.report.summary import SEGMENTS_PER_ENVIRONMENT, Summary
from tests.report.browser import open_page
from tests.report.synthetic import T0_NS
from tests.report.test_summary import known_function

START_TYPES = ("cold", "warm", "provisioned", "proactive", "restored")


def test_one_row_per_environment_no_console_errors_no_requests(tmp_path):
    # GIVEN the report of four environments (one more that failed INIT)
    source = known_function().write(tmp_path / "otlp.jsonl")
    out = tmp_path / "report.html"
    assert main(["report", str(source), "--html", str(out)]) == 0
    html = out.read_text()
    # THEN the file fetches nothing: no URL to load, a policy that forbids any request
    assert not re.search(r"(src|href)=\"?https?:", html)
    assert "default-src 'none'" in html
    # WHEN Chromium renders it
    page = open_page(out)
    # THEN it has one row per environment (the failed INIT's too), by INIT start (env-c's
    # provisioned INIT ran 10 s ahead of its first invocation)
    rows = re.findall(r'class="row" role="listitem" tabindex="0" data-env="([^"]+)"', page.dom)
    assert rows == ["env-c", "env-a", "env-b", "env-d", "env-e"]
    # AND every start type is told by a pattern or a label, not only a colour
    for start in ("cold", "warm", "provisioned", "restored"):
        assert f'class="inv s-{start}' in page.dom
    assert "cold (blue, diagonal stripes)" in page.dom
    # AND the markers are there and reachable by keyboard
    for kind in ("stale", "leak", "hazard", "error", "timeout"):
        assert page.count(f'class="m m-{kind}" d="[^"]+" tabindex="0"') == 1, kind
    # AND details on hover or focus: every row and drawn item carries them
    assert page.count('data-tip="') > 20
    # AND the summary tables and the advice come below the timeline
    assert page.dom.index("h-timeline") < page.dom.index("h-summary") < page.dom.index("h-advice")
    assert "Defer importing boto3" in page.dom
    assert page.rendered_ms is not None
    assert page.console == []


def big_summary(environments: int = 1000, per_environment: int = 100) -> Summary:
    """1,000 environments, 100,000 invocations, over an hour, with INITs and events."""
    summary = Summary()
    for index in range(environments):
        env = f"env-{index:04d}"
        born = T0_NS + index * 3_000_000_000
        summary.add(Init(env, "on-demand", 0.3, born - 300_000_000, born))
        for number, module in enumerate(("boto3", "pandas", "app")):
            start = born - 300_000_000 + number * 80_000_000
            summary.add(
                Import(env, module, 0.07, "site-packages", False, start, start + 70_000_000)
            )
        for seq in range(1, per_environment + 1):
            start = born + seq * 30_000_000_000 // per_environment
            events = []
            if seq % 25 == 0:
                events.append(
                    Event(env, "lifecycle.connection.stale",
                          {"db.system": "postgresql", "lifecycle.connection.outcome": "detected",
                           "lifecycle.connection.idle_s": 400.0}, seq, start)
                )  # fmt: skip
            summary.add(
                Invocation(
                    env, seq, START_TYPES[index % 5] if seq == 1 else "warm",
                    "error" if seq % 40 == 0 else "ok", start, start + 20_000_000,
                    idle_s=None if seq == 1 else 0.28, events=events,
                )
            )  # fmt: skip
    return summary.finish()


def test_a_thousand_environments_and_100k_invocations_render_fast(tmp_path):
    # GIVEN the report of 1,000 environments and 100,000 invocations
    summary = big_summary()
    assert summary.invocations == 100_000
    started = time.monotonic()
    html = render(summary, summary.to_json())
    render_s = time.monotonic() - started
    out = tmp_path / "big.html"
    out.write_text(html)
    # WHEN Chromium renders it
    page = open_page(out)
    # THEN every environment has its row, its invocations aggregated to a bounded number
    assert page.count(r'class="row" role="listitem"') == 1000
    drawn = page.count(r'class="inv ')
    assert 1000 <= drawn <= 1000 * SEGMENTS_PER_ENVIRONMENT
    assert page.count(r'class="inv s-warm agg"') > 0
    # AND it was drawn in under 2 s (the page's own clock, from navigation to first frame)
    print(f"HTML {len(html) / 1e6:.1f} MB built in {render_s:.2f} s; rendered in "
          f"{page.rendered_ms} ms; chromium ran {page.wall_s:.1f} s")  # fmt: skip
    assert page.rendered_ms is not None
    assert page.rendered_ms < 2000
    assert page.console == []
    assert render_s < 10


def test_more_environments_than_rows_are_aggregated(tmp_path):
    summary = big_summary(environments=1010, per_environment=2)
    html = render(summary, summary.to_json())
    assert html.count('class="row" role="listitem"') == 1000
    assert 'class="row aggregate"' in html
    assert "10 more environments, 20 invocations, aggregated" in html


def test_report_of_logs_without_timestamps_still_renders(tmp_path):
    # EMF documents give an INIT duration, no INIT start: the bar ends at the first invocation
    from tests.report.synthetic import emf_document

    path = tmp_path / "emf.log"
    path.write_text(
        emf_document("e1", 1, "cold", end_ms=1_000_000, init_ms=200.0) + "\n"
        + emf_document("e1", 2, "warm", end_ms=1_005_000, idle_ms=4_990.0) + "\n"
    )  # fmt: skip
    summary, stats = summarise([str(path)])
    html = render(summary, summary.to_json(), stats)
    assert html.count('class="row" role="listitem"') == 1
    assert 'data-tip="INIT 200.0 ms, on-demand"' in html
