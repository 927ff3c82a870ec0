"""``lifecycle-probe report``: what the probe exported, summarised, with advice and a timeline.

Flow: :mod:`.reader` (OTLP JSON lines, EMF, the probe's log lines; :mod:`.cloudwatch`
for a log group) → :mod:`.records` → :mod:`.summary` (streamed) → :mod:`.advice` →
:mod:`.text`, JSON, :mod:`.html`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lifecycle_probe.report.reader import Reader, ReadStats
from lifecycle_probe.report.summary import Summary

__all__ = ["ReadStats", "Reader", "Summary", "add_arguments", "run", "summarise", "write_html"]


def summarise(paths: Sequence[str], lines: Iterable[str] = ()) -> tuple[Summary, ReadStats]:
    """Read ``paths`` (and ``lines``, e.g. a log group's) into a finished summary."""
    reader = Reader()
    summary = Summary()
    summary.add_all(reader.read_paths(paths))
    summary.add_all(reader.read_lines(lines, "cloudwatch"))
    reader.finish()
    return summary.finish(), reader.stats


def write_html(path: Path, summary: Summary, report: dict[str, Any], stats: ReadStats) -> None:
    from lifecycle_probe.report.html import render

    path.write_text(render(summary, report, stats), encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``report`` arguments to ``parser``."""
    parser.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="files or folders: OTLP JSON lines (otlp-file, a Collector's file exporter; "
        ".gz too), EMF and the probe's JSON log lines (a CloudWatch Logs export, a saved "
        "log stream); '-' reads standard input",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output (default: text)"
    )
    parser.add_argument("--html", metavar="OUT", help="also write the HTML timeline to OUT")
    parser.add_argument(
        "--cloudwatch",
        metavar="LOG_GROUP",
        help="also read the log group (e.g. /aws/lambda/my-function) through boto3; "
        "credentials and region as the AWS CLI finds them (AWS_PROFILE, AWS_REGION, ...)",
    )
    parser.add_argument(
        "--since", default="1h", metavar="AGE", help="with --cloudwatch: how far back (1h, 30m, 2d)"
    )
    parser.add_argument("--region", help="with --cloudwatch: the AWS region")
    parser.add_argument(
        "--endpoint-url", help="with --cloudwatch: another CloudWatch Logs endpoint"
    )


def run(args: argparse.Namespace) -> int:
    """Print the report; 0 when something was read, 2 on a usage or source error."""
    if not args.sources and not args.cloudwatch:
        print("lifecycle-probe report: give a SOURCE or --cloudwatch LOG_GROUP", file=sys.stderr)
        return 2
    missing = [s for s in args.sources if s != "-" and not Path(s).exists()]
    if missing:
        print(f"lifecycle-probe report: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    lines: Iterable[str] = ()
    if args.cloudwatch:
        from lifecycle_probe.report.cloudwatch import log_lines, since_seconds

        try:
            since = since_seconds(args.since)
        except ValueError as exc:
            print(f"lifecycle-probe report: {exc}", file=sys.stderr)
            return 2
        lines = log_lines(
            args.cloudwatch, since, region=args.region, endpoint_url=args.endpoint_url
        )
    try:
        summary, stats = summarise(args.sources, lines)
    except Exception as exc:
        if not args.cloudwatch:
            raise
        print(f"lifecycle-probe report: reading {args.cloudwatch}: {exc}", file=sys.stderr)
        return 2
    for unreadable in stats.unreadable:
        print(f"lifecycle-probe report: cannot read {unreadable}", file=sys.stderr)
    if stats.unreadable and not stats.sources and not args.cloudwatch:
        return 2  # (nothing could be read: no report)
    report = summary.to_json()
    if args.format == "json":
        # (the reader lets no NaN or Infinity through: this keeps the output JSON if one did)
        print(json.dumps(report, indent=2, allow_nan=False))
        if stats.malformed:
            from lifecycle_probe.report.text import read_note

            print(read_note(stats), file=sys.stderr)
    else:
        from lifecycle_probe.report.text import render

        sys.stdout.write(render(report, stats))
    if args.html:
        try:
            write_html(Path(args.html), summary, report, stats)
        except OSError as exc:
            print(
                f"lifecycle-probe report: cannot write {args.html}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
        print(f"wrote {args.html}", file=sys.stderr if args.format == "json" else sys.stdout)
    return 0
