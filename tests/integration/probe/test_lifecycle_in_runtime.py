"""The probe under AWS's own runtime client (awslambdaric) in the local Lambda.

Each test compares what the probe recorded inside the runtime process with what the
local Lambda observed from outside: process spawn time, the runtime's first request for
work, which environment served which request and whether it was new.
"""

from __future__ import annotations

import pytest

from lifecycle_probe.environment import clock_tick_ns
from tests.integration.probe.support import disagreements, init_lines, invocation_lines

pytestmark = pytest.mark.integration

GAP_ENV = {"LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS": "300"}
# The runtime's request for work leaves the process a moment after the probe notes it:
# one local HTTP round trip, generously bounded for a loaded 2-core machine.
SIGNAL_TO_SERVER_NS = 250_000_000


def facts_of(result):
    assert result.outcome == "ok", result.error
    return result.response["facts"]


def test_cold_then_warm_with_exact_init_timing(local_lambda, probe_handlers):
    # GIVEN a decorated handler whose module sleeps 150 ms at INIT (the probe is
    # imported from inside that module, while it is still executing)
    emulator = local_lambda("probed.handler", probe_handlers)
    # WHEN it is invoked three times, with a 0.6 s freeze before the third
    first = emulator.invoke({})
    second = emulator.invoke({})
    emulator.freeze_for(0.6)
    third = emulator.invoke({})
    # THEN the tags agree with the ground truth: cold, warm, warm in one environment
    assert [r.start_type_truth for r in (first, second, third)] == ["cold", "warm", "warm"]
    facts = [facts_of(r) for r in (first, second, third)]
    assert [f["start"] for f in facts] == ["cold", "warm", "warm"]
    assert [f["invocation_seq"] for f in facts] == [1, 2, 3]
    assert len({f["environment_id"] for f in facts}) == 1
    assert first.pid == second.pid == third.pid
    assert first.response["counter"] == 1
    assert third.response["counter"] == 3
    # idle: the freeze between the second invocation's end and the third's start
    assert facts[0]["idle_s"] is None
    assert 0.6 <= facts[2]["idle_s"] < 0.6 + 2.0
    truth_gap_s = (third.delivered_ns - second.end_ns) / 1e9
    # the probe's clock readings sit inside the emulator's: a thaw and an HTTP round trip
    assert abs(facts[2]["idle_s"] - truth_gap_s) < 0.25
    # INIT start: the process's start from /proc, within one tick before the spawn
    env = emulator.environment(first.environment)
    (init,) = init_lines(emulator)[first.environment]
    tick = clock_tick_ns()
    assert init["start_source"] == "process"
    assert env.spawn_start_ns - tick <= init["start_ns"] <= env.spawn_end_ns
    # INIT end: the runtime's own first request for work (exact, not estimated), which
    # the local Lambda saw arrive a moment later over HTTP
    assert init["end_source"] == "runtime"
    assert init["estimated"] is False
    assert env.first_next_ns is not None
    assert 0 <= env.first_next_ns - init["end_ns"] < SIGNAL_TO_SERVER_NS
    assert init["end_ns"] >= first.response["imported_ns"]
    # the INIT duration covers the module's 150 ms of INIT work
    assert init["duration_s"] >= 0.15
    assert facts[0]["init_duration_s"] == pytest.approx(init["duration_s"], abs=1e-6)
    assert disagreements(emulator) == []


def test_scale_out_burst_gives_each_new_environment_a_cold_start(local_lambda, probe_handlers):
    emulator = local_lambda("probed.handler", probe_handlers)
    results = emulator.invoke_many([{"sleep_s": 0.3}] * 6, concurrency=3)
    assert all(r.outcome == "ok" for r in results)
    environments = {r.environment for r in results}
    assert len(environments) >= 2
    colds = [r for r in results if r.cold]
    assert len(colds) == len(environments)
    assert [facts_of(r)["start"] for r in colds] == ["cold"] * len(colds)
    assert disagreements(emulator) == []


def test_provisioned_environment(local_lambda, probe_handlers):
    emulator = local_lambda("probed.handler", probe_handlers, provisioned_concurrency=1)
    emulator.freeze_for(0.5)  # provisioned environments wait: still not proactive
    first, second = emulator.invoke({}), emulator.invoke({})
    assert first.init_type == "provisioned-concurrency"
    assert [facts_of(first)["start"], facts_of(second)["start"]] == ["provisioned", "warm"]
    assert facts_of(first)["init_type"] == "provisioned-concurrency"
    assert disagreements(emulator) == []


def test_proactive_environment(local_lambda, probe_handlers):
    # GIVEN an environment Lambda initialised ahead of demand, invoked 0.8 s later
    emulator = local_lambda("probed.handler", probe_handlers, env=GAP_ENV)
    (env,) = emulator.pre_initialise(1)
    emulator.freeze_for(0.8)
    result = emulator.invoke({})
    # THEN the first invocation is proactive (not a cold start), then warm
    assert (result.environment, result.start_type_truth) == (env.id, "proactive")
    assert facts_of(result)["start"] == "proactive"
    assert facts_of(emulator.invoke({}))["start"] == "warm"
    # and an on-demand cold start in the same function is still cold
    emulator.kill(env.id)
    assert facts_of(emulator.invoke({}))["start"] == "cold"
    assert disagreements(emulator) == []


def test_snap_start_restore_is_a_new_environment(local_lambda, probe_handlers):
    emulator = local_lambda(
        "probed.handler", probe_handlers, init_type="snap-start", snapshot_pause_s=0.5
    )
    first, second = emulator.invoke({}), emulator.invoke({})
    facts = facts_of(first)
    assert first.start_type_truth == "restored"
    assert facts["start"] == "restored"
    assert facts_of(second)["start"] == "warm"
    # the id drawn before the snapshot is replaced after the restore
    assert facts["environment_id"] != first.response["environment_id_at_init"]
    assert facts["invocation_seq"] == 1
    (init,) = init_lines(emulator)[first.environment]
    env = emulator.environment(first.environment)
    # its INIT is the one before the snapshot (the restore: test_lambda_figures_in_runtime)
    assert (init["start_source"], init["end_source"], init["restored"]) == (
        "process",
        "snapshot",
        True,
    )
    assert init["environment_id"] == facts["environment_id"]
    assert env.first_next_ns is not None
    assert 0 <= env.first_next_ns - init["end_ns"] < SIGNAL_TO_SERVER_NS
    assert facts["init_duration_s"] == pytest.approx(init["duration_s"], abs=1e-6)
    # the environment's age restarts at the restore: the snapshot pause is not in it
    assert env.restore_done_ns is not None
    assert facts["environment_age_s"] < (first.delivered_ns - env.restore_done_ns) / 1e9 + 0.25
    assert disagreements(emulator) == []


def test_probe_loaded_first_by_an_exec_wrapper(local_lambda, probe_handlers):
    # GIVEN a wrapper that calls install() before the runtime client is even imported
    emulator = local_lambda(
        "probed.handler", probe_handlers, exec_wrapper=probe_handlers / "probe_first.sh"
    )
    first, second = emulator.invoke({}), emulator.invoke({})
    assert [facts_of(first)["start"], facts_of(second)["start"]] == ["cold", "warm"]
    env = emulator.environment(first.environment)
    (init,) = init_lines(emulator)[first.environment]
    # THEN the start is the wrapper's finer one (inside the spawn), the end the runtime's
    assert init["start_source"] == "exec-wrapper"
    assert env.spawn_start_ns <= init["start_ns"]
    assert init["start_ns"] < first.response["imported_ns"]
    assert init["end_source"] == "runtime"
    assert env.first_next_ns is not None
    assert 0 <= env.first_next_ns - init["end_ns"] < SIGNAL_TO_SERVER_NS
    assert disagreements(emulator) == []


def test_handler_error_and_timeout(local_lambda, probe_handlers):
    emulator = local_lambda("probed.handler", probe_handlers, timeout_s=1.0)
    failed = emulator.invoke({"fail": True})
    after_failure = emulator.invoke({})
    timed_out = emulator.invoke({"sleep_s": 5})
    after_timeout = emulator.invoke({})
    assert (failed.outcome, failed.error_type) == ("error", "ValueError")
    lines = invocation_lines(emulator)
    assert (lines[failed.request_id]["outcome"], lines[failed.request_id]["error_type"]) == (
        "error",
        "ValueError",
    )
    assert facts_of(after_failure)["start"] == "warm"
    # a timeout kills the environment: the next request is a cold start elsewhere
    assert timed_out.outcome == "timeout"
    assert after_timeout.environment != timed_out.environment
    assert facts_of(after_timeout)["start"] == "cold"
    assert disagreements(emulator) == []


def test_zero_code_entry_point_under_the_runtime(local_lambda, probe_handlers):
    # GIVEN a plain handler run through lifecycle_probe.handler, as the layer's wrapper does
    emulator = local_lambda(
        "lifecycle_probe.handler.handler",
        probe_handlers,
        env={"LIFECYCLE_PROBE_HANDLER": "plain.handler", "LIFECYCLE_PROBE_EXPORTER": "console"},
    )
    first, second = emulator.invoke({"n": 1}), emulator.invoke({"n": 2})
    assert [first.response, second.response] == [{"echo": {"n": 1}}, {"echo": {"n": 2}}]
    lines = invocation_lines(emulator)
    assert [lines[r.request_id]["start"] for r in (first, second)] == ["cold", "warm"]
    (init,) = init_lines(emulator)[first.environment]
    assert (init["start_source"], init["end_source"]) == ("process", "runtime")
    assert disagreements(emulator) == []
