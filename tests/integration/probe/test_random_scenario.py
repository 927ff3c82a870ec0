"""Hundreds of invocations in a random but seeded workload: every probe tag must agree."""

from __future__ import annotations

import os
import random
from collections import Counter

import pytest

from tests.integration.probe.scenario import run_scenario
from tests.integration.probe.support import disagreements, invocation_lines

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("LIFECYCLE_PROBE_SCENARIO_SEED", "20261128"))
ENV = {"LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS": "300", "PROBED_INIT_SLEEP_S": "0.02"}


def test_random_workload_tags_agree_with_ground_truth(local_lambda, probe_handlers):
    # GIVEN an on-demand function with one provisioned environment, a short idle
    # timeout (reaping) and a short proactive gap
    emulator = local_lambda(
        "probed.handler",
        probe_handlers,
        env=ENV,
        timeout_s=1.0,
        idle_timeout_s=1.5,
        provisioned_concurrency=1,
    )
    # WHEN 300+ requests arrive in seeded bursts, sequences, pauses, reaps and kills
    operations = run_scenario(emulator, random.Random(SEED), invocations=300)
    truth = emulator.truth
    # THEN every request's probe tag equals the local Lambda's ground truth
    assert disagreements(emulator) == [], f"seed {SEED}, operations {dict(operations)}"
    assert len(truth) >= 300
    starts = Counter(r.start_type_truth for r in truth if r.outcome != "timeout")
    assert {"cold", "warm", "provisioned", "proactive"} <= set(starts), starts
    # and the probe's counts sum to the truth. A timed-out invocation's record is written
    # when the probe's timeout report beats the kill, which the kill's timing decides: such
    # a line, when there is one, says so and names the truth's start
    lines = invocation_lines(emulator)
    finished = [line for line in lines.values() if line["outcome"] != "timeout"]
    assert Counter(line["start"] for line in finished) == starts
    assert sum(line["coldstart"] for line in finished) == starts["cold"]
    timed_out = {r.request_id: r for r in truth if r.outcome == "timeout"}
    for line in lines.values():
        if line["outcome"] == "timeout":
            assert line["start"] == timed_out[line["request_id"]].start_type_truth


def test_random_snap_start_workload(local_lambda, probe_handlers):
    emulator = local_lambda(
        "probed.handler",
        probe_handlers,
        env=ENV,
        init_type="snap-start",
        timeout_s=1.0,
        idle_timeout_s=1.5,
        snapshot_pause_s=0.05,
    )
    run_scenario(emulator, random.Random(SEED + 1), invocations=60)
    assert disagreements(emulator) == [], f"seed {SEED + 1}"
    starts = Counter(r.start_type_truth for r in emulator.truth if r.outcome != "timeout")
    assert starts["restored"] >= 2
    assert starts["warm"] > starts["restored"]
