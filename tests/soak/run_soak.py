#!/usr/bin/env python3
"""Soak: thousands of invocations of the seeded random workload; every probe tag must agree.

Outside the default test suite (it takes minutes). Run from the repository root::

    .venv/bin/python -m tests.soak.run_soak --invocations 5000 --seed 7

It drives the probed fixture handler in the local Lambda with the same operations as
``tests/integration/probe/test_random_scenario.py`` (bursts, sequences, pauses, idle
reaps, kills, proactive initialisation, failures, timeouts), then compares every
request's probe tag with the local Lambda's ground truth, and prints the counts.
Exit status 0 when everything agrees.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

from lifecycle_probe.emulator import FunctionConfig, LocalLambda
from tests.integration.probe.scenario import run_scenario
from tests.integration.probe.support import disagreements, invocation_lines

HANDLERS = Path(__file__).resolve().parents[1] / "integration" / "fixtures" / "probe_handlers"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--init-type", default="on-demand", choices=["on-demand", "snap-start"])
    args = parser.parse_args()
    function = FunctionConfig(
        "probed.handler",
        HANDLERS,
        env={"LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS": "300", "PROBED_INIT_SLEEP_S": "0.02"},
        timeout_s=1.0,
        init_type=args.init_type,
    )
    started = time.monotonic()
    with LocalLambda(
        function,
        idle_timeout_s=1.5,
        provisioned_concurrency=1 if args.init_type == "on-demand" else 0,
        snapshot_pause_s=0.05,
    ) as emulator:
        operations = run_scenario(emulator, random.Random(args.seed), args.invocations)
        problems = disagreements(emulator)
        truth = emulator.truth
        lines = invocation_lines(emulator)
        environments = emulator.environments
    elapsed = time.monotonic() - started
    outcomes = Counter(r.outcome for r in truth)
    starts = Counter(r.start_type_truth for r in truth if r.outcome != "timeout")
    probe_starts = Counter(line["start"] for line in lines.values())
    print(f"seed {args.seed}, {len(truth)} requests in {elapsed:.0f} s", end=", ")
    print(f"{len(environments)} environments")
    print(f"operations: {dict(sorted(operations.items()))}")
    print(f"outcomes: {dict(sorted(outcomes.items()))}")
    print(f"start types, ground truth: {dict(sorted(starts.items()))}")
    print(f"start types, probe:        {dict(sorted(probe_starts.items()))}")
    print(f"disagreements: {len(problems)}")
    for problem in problems[:20]:
        print(f"  {problem}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
