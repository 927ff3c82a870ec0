#!/usr/bin/env python3
"""What the ``emf`` exporter costs the caller, beside Powertools' own decorators.

Part A, per invocation, in one process and one run (stdout to ``os.devnull``):

- ``bare``: the handler ``handler(event, context) -> event``;
- ``probe emf, after-response``: ``@probe(exporter="emf")`` with an internal extension
  registered (a stand-in that drains between chunks, off the clock): what the caller waits
  for is the probe's capture and queueing the record; EMF is written after the response;
- ``probe emf, sync``: the same with ``flush="sync"``: the EMF document is built by
  Powertools' provider and written before the handler returns (outside Lambda, or where no
  extension can register);
- ``powertools``: the peer, ``@logger.inject_lambda_context`` over
  ``@metrics.log_metrics(capture_cold_start_metric=True)`` on the same handler, emitting
  nothing else (``raise_on_empty_metrics=False``, its warning silenced): the least a
  Powertools user's invocation pays;
- ``powertools + 1 metric``: the same when the handler adds one metric, so Powertools
  writes one EMF document per invocation, as the probe does (its handler adds the metric
  and the bare twin clears it; the added cost is against that twin).

Every case gets the context awslambdaric builds and the ``_X_AMZN_TRACE_ID`` variable the
runtime sets, as on Lambda. Each case is warmed up with 1000 calls, then timed in chunks
of ``--chunk`` calls over ``--runs`` repeats, the order rotated; figures are medians per
call. The target (issue 9): the caller's share with after-response flushing is at most
Powertools' own.

Part B, INIT: a fresh interpreter runs ``from lifecycle_probe import probe`` and
``probe(exporter=X)(handler)`` for ``emf`` and ``none``, interleaved ``--processes`` times;
the median wall time of each is compared. It also checks that Powertools is not imported
at INIT with ``emf``.

    .venv/bin/python benchmarks/emf_overhead.py [--runs 7] [--chunk 2000] [--processes 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

from lifecycle_probe.testing import FakeContext, fresh_environment


def handler(event: Any, context: Any) -> Any:
    return event


class StandInExtension:
    """Registered, as the internal extension is on Lambda; drains when told to."""

    registered = True

    def __init__(self, budget_s: float = 1.0) -> None:
        self.drains: list[Callable[[float], object]] = []
        self.budget_s = budget_s  # what each drain may take, as the extension would give it
        self.drain_ns = 0  # the after-response work: billed, but no caller waits for it

    def add_flush(self, drain: Callable[[float], object]) -> None:
        self.drains.append(drain)

    def add_timeout_report(self, report: Callable[[int], object]) -> None:
        return

    def drain(self) -> None:
        start = time.perf_counter_ns()
        for drain in self.drains:
            drain(self.budget_s)
        self.drain_ns += time.perf_counter_ns() - start


def probed(flush: str) -> tuple[Callable[[Any, Any], Any], StandInExtension]:
    from unittest import mock

    from lifecycle_probe import probe

    fresh_environment(environ={"AWS_LAMBDA_FUNCTION_NAME": "bench"})
    stand_in = StandInExtension()
    with (
        mock.patch("lifecycle_probe.extension.after_response_extension", return_value=stand_in),
        mock.patch("lifecycle_probe.decorator.active_extension", return_value=stand_in),
    ):
        wrapped = probe(exporter="emf", flush=flush)(handler)
    return wrapped, stand_in


def powertools(one_metric: bool) -> tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]:
    from aws_lambda_powertools import Logger, Metrics

    logger = Logger(service="bench")
    metrics = Metrics(namespace="Bench", service="bench")

    def adds_metric(event: Any, context: Any) -> Any:
        metrics.add_metric(name="Orders", unit="Count", value=1)
        return event

    def bare_twin(event: Any, context: Any) -> Any:
        metrics.add_metric(name="Orders", unit="Count", value=1)
        metrics.clear_metrics()
        return event

    inner = adds_metric if one_metric else handler
    decorated = logger.inject_lambda_context(
        metrics.log_metrics(inner, capture_cold_start_metric=True)
    )
    return decorated, (bare_twin if one_metric else handler)


def lambda_context() -> Any:
    """The context awslambdaric hands a handler (FakeContext where it is not installed)."""
    try:
        from awslambdaric.lambda_context import LambdaContext
    except ImportError:
        return FakeContext()
    deadline_ms = int(time.time() * 1000) + 900_000
    arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    return LambdaContext("8f5b1e1c-0000-4000-8000-000000000000", None, None, deadline_ms, arn)


def time_chunks(
    function: Callable[[Any, Any], Any], chunk: int, between: Callable[[], None]
) -> float:
    event = {"id": 1}
    context = lambda_context()
    start = time.perf_counter_ns()
    for _ in range(chunk):
        function(event, context)
    elapsed = time.perf_counter_ns() - start
    between()
    return elapsed / chunk


def part_a(runs: int, chunk: int) -> dict[str, float]:
    nothing: Callable[[], None] = lambda: None  # noqa: E731
    after, stand_in = probed("after-response")
    after_drain = stand_in.drain
    sync, _ = probed("sync")
    peer, peer_base = powertools(one_metric=False)
    peer1, peer1_base = powertools(one_metric=True)
    cases: dict[str, tuple[Callable[[Any, Any], Any], Callable[[], None]]] = {
        "bare": (handler, nothing),
        "probe emf, after-response": (after, after_drain),
        "probe emf, sync": (sync, nothing),
        "powertools": (peer, nothing),
        "powertools + 1 metric": (peer1, nothing),
        "(bare + 1 metric)": (peer1_base, nothing),
    }
    assert peer_base is handler
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for function, between in cases.values():
        time_chunks(function, 1000, between)  # warm-up, the probe's cold call included
    stand_in.drain_ns = 0
    for run in range(runs):
        order = names[run % len(names) :] + names[: run % len(names)]
        for name in order:
            function, between = cases[name]
            times[name].append(time_chunks(function, chunk, between))
    figures = {name: statistics.median(values) for name, values in times.items()}
    figures["(after-response work)"] = stand_in.drain_ns / (runs * chunk)
    return figures


FIRST_WRITE_SNIPPET = """
import sys, time
sys.path.insert(0, sys.argv[1])
import emf_overhead as bench
wrapped, stand_in = bench.probed("after-response")
wrapped({}, bench.lambda_context())
stand_in.drain()  # the first document: Powertools' EMF provider is imported here
print(stand_in.drain_ns)
"""


def part_c(processes: int) -> float:
    """Median time of the first after-response write of a fresh process (ms)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    here = os.path.dirname(os.path.abspath(__file__))
    found = []
    for _ in range(processes):
        out = subprocess.run(
            [sys.executable, "-c", FIRST_WRITE_SNIPPET, here],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split()
        found.append(int(out[-1]) / 1e6)
    return statistics.median(found)


INIT_SNIPPET = """
import sys, time
start = time.perf_counter_ns()
from lifecycle_probe import probe
probe(exporter=sys.argv[1])(lambda event, context: event)
print(time.perf_counter_ns() - start, "aws_lambda_powertools" in sys.modules)
"""


def part_b(processes: int) -> dict[str, tuple[float, bool]]:
    # As on Lambda: no probe or OTel variables, and imports from .pyc files (a development
    # shell's PYTHONDONTWRITEBYTECODE would make every child compile its sources again).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIFECYCLE_PROBE_", "OTEL_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    found: dict[str, list[float]] = {"emf": [], "none": []}
    for exporter in found:  # once unmeasured, so that the .pyc files exist
        subprocess.run(
            [sys.executable, "-c", INIT_SNIPPET, exporter], env=env, check=True, capture_output=True
        )
    powertools_at_init = {"emf": False, "none": False}
    for _ in range(processes):
        for exporter in found:
            out = subprocess.run(
                [sys.executable, "-c", INIT_SNIPPET, exporter],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout.split()
            found[exporter].append(int(out[0]) / 1e6)
            powertools_at_init[exporter] |= out[1] == "True"
    return {
        exporter: (statistics.median(values), powertools_at_init[exporter])
        for exporter, values in found.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    # Below the sinks' queue bound (1000): a longer chunk would drop records, not time them.
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--processes", type=int, default=20)
    args = parser.parse_args()
    os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "bench"
    # A private temporary directory, as Lambda gives each environment its own /tmp.
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="emf-bench-")
    os.environ["_X_AMZN_TRACE_ID"] = (
        "Root=1-65f0a000-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"
    )
    with (
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # Powertools' "no metrics to publish"
        figures = part_a(args.runs, args.chunk)
    bare = figures["bare"]
    print(f"A. per invocation (median of {args.runs} runs x {args.chunk} calls), ns per call")
    print(f"   {'case':32} {'ns/call':>10} {'added':>10}")
    for name, value in figures.items():
        if name == "(after-response work)":
            print(f"   {name:32} {value:10.0f}   per invocation, after the response")
            continue
        base = figures["(bare + 1 metric)"] if name == "powertools + 1 metric" else bare
        added = "" if name.startswith(("bare", "(")) else f"{value - base:+10.0f}"
        print(f"   {name:32} {value:10.0f} {added:>10}")
    caller = figures["probe emf, after-response"] - bare
    peer = figures["powertools"] - bare
    verdict = "PASS" if caller <= peer else "MISS"
    print(
        f"   caller's share (after-response) {caller / 1000:.2f} us vs Powertools' own "
        f"{peer / 1000:.2f} us: {caller / peer:.2f}x -> {verdict} (target <= 1x)"
    )
    init = part_b(args.processes)
    emf_ms, emf_powertools = init["emf"]
    none_ms, _ = init["none"]
    print(f"B. INIT: import + probe(), median of {args.processes} processes each")
    init_added = emf_ms - none_ms
    print(f"   exporter=none {none_ms:.2f} ms, exporter=emf {emf_ms:.2f} ms: {init_added:+.2f} ms")
    print(f"   Powertools imported at INIT with emf: {emf_powertools}")
    first_ms = part_c(max(3, args.processes // 4))
    print("C. the first invocation's after-response write (imports Powertools' EMF provider;")
    print(f"   billed before the freeze, no caller waits): {first_ms:.1f} ms")


if __name__ == "__main__":
    main()
