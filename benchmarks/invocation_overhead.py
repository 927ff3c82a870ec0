#!/usr/bin/env python3
"""What the probe adds to each invocation's caller: capture alone, and with OpenTelemetry.

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

Part B, the caller's part with OpenTelemetry and ``after-response`` flushing:
``@probe(exporter="otlp-file", flush="after-response")`` with a stand-in for the internal
extension (registered, as on Lambda), against the bare handler. What the caller waits for
is the capture and queueing the invocation; the record is built and exported when the
stand-in drains, between chunks of ``--chunk`` calls, off the clock (the drain time is
printed per call, as the after-response work Lambda bills but no caller waits for).

Targets (issue 15), on the medians, each printed as PASS or MISS (the script always
exits 0): capture alone adds at most 1.5 us AND no more than Powertools' ``log_metrics``
with no metric in the same run; the caller's part with OpenTelemetry after the response
adds at most 5 us.

Run it with the project's interpreter::

    .venv/bin/python benchmarks/invocation_overhead.py [--runs 7] [--number 200000]
        [--chunk 500]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# (run as a script from the repository root: this directory is first on sys.path)
from emf_overhead import StandInExtension

TARGET_CAPTURE_NS = 1500.0
TARGET_AFTER_RESPONSE_NS = 5000.0
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


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def report(cases: list[Case], notes: list[str], runs: int, number: int) -> None:
    """The per-call table and the verdicts of part A against its targets."""
    bare = cases[0]
    bare_min = min(bare.per_call_ns)
    bare_median = statistics.median(bare.per_call_ns)
    print()
    print(f"A. capture: ns per call, {runs} repeats x {number:,} calls each")
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
    print("added = case - bare handler (the bare figure includes the timing loop itself)")
    added = statistics.median(cases[1].per_call_ns) - bare_median
    print(
        f'@probe(exporter="none") adds {added:.1f} ns ({added / 1000:.2f} us) per call '
        f"(median); target <= {TARGET_CAPTURE_NS / 1000:.1f} us: "
        f"{verdict(added <= TARGET_CAPTURE_NS)}"
    )
    peers = [case for case in cases if case.label.startswith("peer: powertools")]
    if peers:
        peer_added = statistics.median(peers[0].per_call_ns) - bare_median
        print(
            f"  and <= Powertools log_metrics in this run ({peer_added:.1f} ns): "
            f"{verdict(added <= peer_added)}"
        )
    else:
        print("  and <= Powertools log_metrics: MISS (not measured: Powertools not importable)")


def after_response(
    event: Any, context: Any, runs: int, chunk: int, directory: str
) -> tuple[list[float], list[float], float]:
    """Part B: per-call times of the bare handler and of the probe with OpenTelemetry
    after the response (one figure per repeat each), and the drain time per call."""
    from unittest import mock

    from lifecycle_probe import probe
    from lifecycle_probe.testing import fresh_environment

    fresh_environment(environ={"AWS_LAMBDA_FUNCTION_NAME": "bench"})
    stand_in = StandInExtension(budget_s=5.0)
    path = os.path.join(directory, "otlp.jsonl")
    with (
        mock.patch("lifecycle_probe.extension.after_response_extension", return_value=stand_in),
        mock.patch("lifecycle_probe.decorator.active_extension", return_value=stand_in),
    ):
        probed = probe(exporter="otlp-file", otlp_file=path, flush="after-response")(handler)
    cases: list[tuple[Handler, list[float]]] = [(handler, []), (probed, [])]
    for function, _ in cases:
        time_calls(function, event, context, chunk)  # the cold call; the SDK is imported
        stand_in.drain()  # in the first drain
    stand_in.drain_ns = 0
    for repeat in range(runs):
        for function, times in cases[repeat % 2 :] + cases[: repeat % 2]:
            times.append(time_calls(function, event, context, chunk) / chunk)
            stand_in.drain()
    return cases[0][1], cases[1][1], stand_in.drain_ns / (runs * chunk)


def report_after_response(bare: list[float], probed: list[float], drain_ns: float) -> None:
    """The table and verdict of part B."""
    bare_median = statistics.median(bare)
    added = statistics.median(probed) - bare_median
    print()
    print(f"B. OpenTelemetry, after-response: ns per call, {len(bare)} repeats")
    print(f"{'bare handler':<38} {bare_median:9.1f}")
    print(
        f"{'@probe(otlp-file, after-response)':<38} {statistics.median(probed):9.1f}"
        f"   added {added:+.1f}"
    )
    print(f"(after the response, off the caller's clock: {drain_ns:.0f} ns per invocation)")
    print(
        f"the caller's part with OpenTelemetry after the response: {added / 1000:.2f} us "
        f"(median); target <= {TARGET_AFTER_RESPONSE_NS / 1000:.0f} us: "
        f"{verdict(added <= TARGET_AFTER_RESPONSE_NS)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="timed repeats per case (7)")
    parser.add_argument("--number", type=int, default=200_000, help="calls per repeat (200000)")
    parser.add_argument(
        "--chunk", type=int, default=500, help="part B: calls between two drains (500)"
    )
    args = parser.parse_args(argv)
    runs = max(1, args.runs)
    number = max(1, args.number)
    chunk = max(1, args.chunk)

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
    # (stdout silenced: the probe's log sink writes its INIT report line there)
    with tempfile.TemporaryDirectory() as directory, silenced(True):
        bare, probed, drain_ns = after_response(event, context, runs, chunk, directory)
    report_after_response(bare, probed, drain_ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
