#!/usr/bin/env python3
"""Per-invocation overhead of ``@probe(exporter="none")`` against the bare handler.

What it measures
    The time one call of a trivial handler ``handler(event, context) -> event`` takes
    bare and wrapped by ``@probe(exporter="none")`` (the probe's full bookkeeping, records
    built, nothing exported), in the same process and run. The difference is what the
    probe adds to every invocation. For context, when ``aws_lambda_powertools`` can be
    imported, the same handler wrapped by ``Metrics().log_metrics`` with no metric emitted
    (namespace set, ``raise_on_empty_metrics=False``) is measured too; its stdout goes to
    ``os.devnull`` and its "no metrics to publish" warning is ignored while it runs.

How
    Every handler is called with the same small event and a realistic fake context
    (``lifecycle_probe.testing.FakeContext``). Each handler is first called a thousand
    times unmeasured (the probe's first call is the cold one and carries the INIT record).
    Then, ``--runs`` times, every handler is timed over ``--number`` back-to-back calls
    (the order rotated from repeat to repeat), and the per-call time in nanoseconds is
    taken from each repeat. The table shows the min and the median over the repeats; the
    added time and the ratio are against the bare handler, whose figure also contains the
    cost of the timing loop itself. Garbage collection stays enabled, as it is in a
    function: the probe allocates a few small objects per call.

The target (from the issue) is < 5 us (5000 ns) added per invocation; the verdict (on
the median) is printed as PASS or MISS, and the script always exits 0.

Run it with the project's interpreter::

    .venv/bin/python benchmarks/invocation_overhead.py [--runs 7] [--number 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

TARGET_ADDED_NS = 5000.0
WARMUP_CALLS = 1000

Handler = Callable[[Any, Any], Any]


def handler(event: Any, context: Any) -> Any:
    """The trivial handler every case wraps."""
    return event


@dataclass
class Case:
    """One way of calling the handler and its per-call times, one per repeat."""

    label: str
    function: Handler
    quiet: bool = False  # silence stdout and warnings while it runs (powertools)
    per_call_ns: list[float] = field(default_factory=list)


@contextlib.contextmanager
def silenced(active: bool) -> Iterator[None]:
    """Send stdout to os.devnull and ignore warnings while the block runs, if ``active``."""
    if not active:
        yield
        return
    with (
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def time_calls(function: Handler, event: Any, context: Any, number: int) -> int:
    """Nanoseconds taken by ``number`` back-to-back calls of ``function(event, context)``."""
    loop = itertools.repeat(None, number)
    clock = time.perf_counter_ns
    start = clock()
    for _ in loop:
        function(event, context)
    return clock() - start


def calibration(number: int) -> tuple[float, float]:
    """ns per empty Python call and per ``time.time_ns()`` on this machine (for scale)."""

    def empty(event: Any, context: Any) -> None:
        return None

    empty_ns = min(time_calls(empty, None, None, number) for _ in range(3)) / number
    clock = time.time_ns
    loop_ns: list[int] = []
    for _ in range(3):
        start = time.perf_counter_ns()
        for _ in itertools.repeat(None, number):
            clock()
        loop_ns.append(time.perf_counter_ns() - start)
    return empty_ns, min(loop_ns) / number


def make_cases() -> tuple[list[Case], list[str]]:
    """The bare handler, the probed one and the available peers; notes on peers skipped."""
    from lifecycle_probe import probe

    cases = [
        Case("bare handler", handler),
        Case('@probe(exporter="none")', probe(exporter="none")(handler)),
    ]
    notes: list[str] = []
    try:
        from aws_lambda_powertools import Metrics
    except ImportError as exc:
        notes.append(f"aws_lambda_powertools not measured: {exc}")
    else:
        metrics = Metrics(namespace="LifecycleProbeBenchmark", service="benchmark")
        wrapped = metrics.log_metrics(handler, raise_on_empty_metrics=False)
        cases.append(Case("peer: powertools Metrics.log_metrics", wrapped, quiet=True))
    return cases, notes


def measure(cases: list[Case], event: Any, context: Any, runs: int, number: int) -> None:
    """Warm every case up, then time ``runs`` repeats of ``number`` calls, interleaved."""
    for case in cases:
        with silenced(case.quiet):
            time_calls(case.function, event, context, WARMUP_CALLS)
    for repeat in range(runs):
        shift = repeat % len(cases)
        for case in cases[shift:] + cases[:shift]:
            with silenced(case.quiet):
                elapsed = time_calls(case.function, event, context, number)
            case.per_call_ns.append(elapsed / number)


def report(cases: list[Case], notes: list[str], runs: int, number: int) -> None:
    """The per-call table and the verdict against the target."""
    bare = cases[0]
    bare_min = min(bare.per_call_ns)
    bare_median = statistics.median(bare.per_call_ns)
    print()
    print(f"ns per call, {runs} repeats x {number:,} calls each")
    header = (
        f"{'case':<38} {'min':>9} {'median':>9} {'added(min)':>11} {'added(med)':>11}"
        f" {'ratio(med)':>10}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        low = min(case.per_call_ns)
        median = statistics.median(case.per_call_ns)
        if case is bare:
            added_min = added_median = ""
        else:
            added_min = f"{low - bare_min:+.1f}"
            added_median = f"{median - bare_median:+.1f}"
        ratio = f"{median / bare_median:.2f}x"
        print(
            f"{case.label:<38} {low:9.1f} {median:9.1f} {added_min:>11} {added_median:>11}"
            f" {ratio:>10}"
        )
    for note in notes:
        print(note)
    print()
    print("added = case - bare handler (the bare figure includes the timing loop itself)")
    probed = cases[1]
    added = statistics.median(probed.per_call_ns) - bare_median
    verdict = "PASS" if added < TARGET_ADDED_NS else "MISS"
    print(
        f'@probe(exporter="none") adds {added:.1f} ns ({added / 1000:.2f} us) per call '
        f"(median) against a target of < {TARGET_ADDED_NS / 1000:.0f} us: {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="timed repeats per case (7)")
    parser.add_argument("--number", type=int, default=200_000, help="calls per repeat (200000)")
    args = parser.parse_args(argv)
    runs = max(1, args.runs)
    number = max(1, args.number)

    os.environ.pop("LIFECYCLE_PROBE_DISABLED", None)  # a disabled probe is the bare handler
    from lifecycle_probe.testing import FakeContext

    event: dict[str, Any] = {"path": "/orders/42", "httpMethod": "GET", "body": None}
    context = FakeContext(timeout_s=900.0)
    cases, notes = make_cases()
    print(f"interpreter: {sys.executable} (Python {sys.version.split()[0]})")
    empty_ns, clock_ns = calibration(min(number, 200_000))
    print(
        f"machine scale: {empty_ns:.1f} ns per call of an empty 2-argument function, "
        f"{clock_ns:.1f} ns per time.time_ns() (the probe reads the clock twice per call)"
    )
    measure(cases, event, context, runs, number)
    report(cases, notes, runs, number)
    return 0


if __name__ == "__main__":
    sys.exit(main())
