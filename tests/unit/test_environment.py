import os
import time

import pytest

from lifecycle_probe.environment import Environment, clock_tick_ns, current_environment
from lifecycle_probe.records import (
    COLD,
    PROACTIVE,
    PROVISIONED,
    RESTORED,
    SOURCE_ESTIMATED,
    SOURCE_HANDLER_IMPORT,
    SOURCE_PROCESS,
    SOURCE_RUNTIME,
    SOURCE_SNAPSHOT,
    WARM,
)
from lifecycle_probe.testing import FakeContext

S = 1_000_000_000  # one second in ns
GAP = S  # the default proactive gap, 1000 ms
T0 = 1_800_000_000 * S  # an arbitrary wall-clock origin


def context(request_id):
    """The part of a Lambda context the environment reads."""
    return FakeContext(aws_request_id=request_id)


def begin(env, request_id, gap_ns, now_ns):
    """Begin an invocation; its facts and INIT record (None after the first)."""
    invocation = env.begin_invocation(context(request_id), gap_ns, now_ns)
    return invocation.facts(), invocation.init


def environment(init_type="on-demand"):
    return Environment(
        {"AWS_LAMBDA_INITIALIZATION_TYPE": init_type},
        init_start_ns=T0,
        init_start_source=SOURCE_PROCESS,
    )


def test_cold_then_warm_with_sequence_idle_and_age_arithmetic():
    # GIVEN an on-demand environment whose INIT ran 0.8 s and ended by the runtime's signal
    env = environment()
    env.mark_init_end(SOURCE_RUNTIME, T0 + 800_000_000)
    env.mark_event_received(T0 + 801_000_000)
    # WHEN it is invoked right away, then again after a 30 s freeze
    first, init = begin(env, "r1", GAP, T0 + 802_000_000)
    env.end_invocation(env.running_invocation(), T0 + 900_000_000)
    second, no_init = begin(env, "r2", GAP, T0 + 30_900_000_000)
    env.end_invocation(env.running_invocation(), T0 + 31_000_000_000)
    third, _ = begin(env, "r3", GAP, T0 + 31_500_000_000)
    # THEN
    assert (first.start, first.invocation_seq, first.idle_s) == (COLD, 1, None)
    assert first.coldstart is True
    assert first.init_duration_s == pytest.approx(0.8)
    assert first.environment_age_s == pytest.approx(0.802)
    assert init is not None
    assert (init.start_ns, init.end_ns, init.end_source) == (T0, T0 + 800_000_000, SOURCE_RUNTIME)
    assert init.duration_s == pytest.approx(0.8)
    assert init.estimated is False
    assert (second.start, second.invocation_seq, second.coldstart) == (WARM, 2, False)
    assert second.idle_s == pytest.approx(30.0)
    assert second.environment_age_s == pytest.approx(30.9)
    assert no_init is None
    assert (third.start, third.invocation_seq) == (WARM, 3)
    assert third.idle_s == pytest.approx(0.5)
    assert len({first.environment_id, second.environment_id, third.environment_id}) == 1


def test_provisioned_environment_first_invocation_is_provisioned_whatever_the_gap():
    env = environment("provisioned-concurrency")
    env.mark_init_end(SOURCE_RUNTIME, T0 + S)
    facts, init = begin(env, "r1", GAP, T0 + 600 * S)
    assert facts.start == PROVISIONED
    assert facts.coldstart is False
    assert init.init_type == "provisioned-concurrency"
    assert begin(env, "r2", GAP, T0 + 601 * S)[0].start == WARM


@pytest.mark.parametrize(
    ("gap_ms", "expected"),
    [(5, COLD), (999, COLD), (1000, COLD), (1001, PROACTIVE), (120_000, PROACTIVE)],
)
def test_proactive_when_the_event_came_more_than_the_gap_after_init(gap_ms, expected):
    env = environment()
    env.mark_init_end(SOURCE_RUNTIME, T0 + S)
    env.mark_event_received(T0 + S + gap_ms * 1_000_000)
    facts, _ = begin(env, "r1", GAP, T0 + S + gap_ms * 1_000_000 + 200_000)
    assert facts.start == expected
    assert facts.coldstart is (expected == COLD)


def test_the_gap_threshold_is_configurable():
    env = environment()
    env.mark_init_end(SOURCE_RUNTIME, T0 + S)
    env.mark_event_received(T0 + S + 300_000_000)
    assert begin(env, "r1", 250_000_000, T0 + 2 * S)[0].start == PROACTIVE


def test_estimated_init_end_is_marked_and_never_looks_proactive():
    # GIVEN no runtime signal at all (a handler called directly, an unknown runtime)
    env = environment()
    facts, init = begin(env, "r1", GAP, T0 + 3600 * S)
    assert facts.start == COLD
    assert facts.init_estimated is True
    assert init.end_source == SOURCE_ESTIMATED
    assert init.estimated is True
    assert init.end_ns == T0 + 3600 * S


def test_restored_environment_has_a_new_id_and_reports_its_init_and_restore():
    # GIVEN a SnapStart environment: INIT, snapshot, then a restore much later
    env = environment("snap-start")
    env.mark_init_end(SOURCE_SNAPSHOT, T0 + 2 * S)
    before_snapshot_id = env.environment_id
    env.mark_restored(T0 + 900 * S)
    env.mark_init_end(SOURCE_RUNTIME, T0 + 900 * S + 150_000_000)
    env.mark_event_received(T0 + 900 * S + 151_000_000)
    # WHEN the first invocation after restore arrives
    invocation = env.begin_invocation(context("r1"), GAP, T0 + 900 * S + 152_000_000)
    facts, init, restore = invocation.facts(), invocation.init, invocation.restore
    # THEN it is restored, in a new environment, born at the restore
    assert facts.start == RESTORED
    assert facts.coldstart is True
    assert facts.environment_id != before_snapshot_id
    assert (facts.invocation_seq, facts.idle_s) == (1, None)
    assert facts.environment_age_s == pytest.approx(0.152)
    # whose INIT is the one before the snapshot, with its own timestamps
    assert facts.init_duration_s == pytest.approx(2.0)
    assert (init.start_ns, init.end_ns) == (T0, T0 + 2 * S)
    assert (init.start_source, init.end_source, init.restored) == (
        SOURCE_PROCESS,
        SOURCE_SNAPSHOT,
        True,
    )
    assert (init.environment_id, init.init_type) == (facts.environment_id, "snap-start")
    # and whose restore runs from the after-restore hook to the runtime's first request
    assert (restore.start_ns, restore.end_ns) == (T0 + 900 * S, T0 + 900 * S + 150_000_000)
    assert restore.end_source == SOURCE_RUNTIME
    assert restore.duration_s == pytest.approx(0.15)
    assert restore.environment_id == facts.environment_id
    second = env.begin_invocation(context("r2"), GAP, T0 + 901 * S)
    assert (second.facts().start, second.init, second.restore) == (WARM, None, None)


def test_a_restore_without_a_request_for_work_ends_at_the_first_invocation():
    env = environment("snap-start")
    env.mark_init_end(SOURCE_SNAPSHOT, T0 + 2 * S)
    env.mark_restored(T0 + 900 * S)
    invocation = env.begin_invocation(context("r1"), GAP, T0 + 900 * S + 40_000_000)
    assert invocation.restore.end_ns == T0 + 900 * S + 40_000_000
    assert invocation.restore.end_source == SOURCE_ESTIMATED
    # the INIT before the snapshot is untouched
    assert (invocation.init.end_ns, invocation.init.end_source) == (T0 + 2 * S, SOURCE_SNAPSHOT)


def test_stronger_init_end_signal_replaces_weaker_and_first_of_equal_wins():
    env = environment()
    env.mark_init_end(SOURCE_HANDLER_IMPORT, T0 + 100)
    env.mark_init_end(SOURCE_RUNTIME, T0 + 200)
    env.mark_init_end(SOURCE_RUNTIME, T0 + 300)  # the runtime asks again: not a new end
    env.mark_init_end(SOURCE_HANDLER_IMPORT, T0 + 400)
    assert (env.init_end_ns, env.init_end_source) == (T0 + 200, SOURCE_RUNTIME)


def test_signals_after_the_first_invocation_do_not_move_init_end():
    env = environment()
    env.mark_init_end(SOURCE_RUNTIME, T0 + S)
    env.begin_invocation(context("r1"), GAP, T0 + 2 * S)
    env.mark_init_end(SOURCE_RUNTIME, T0 + 5 * S)
    assert env.init_end_ns == T0 + S


def test_facts_between_invocations():
    env = environment()
    env.mark_init_end(SOURCE_RUNTIME, T0 + S)
    facts = env.facts_between_invocations()
    assert (facts.start, facts.invocation_seq, facts.request_id, facts.idle_s) == (
        None,
        0,
        None,
        None,
    )
    assert facts.init_duration_s == pytest.approx(1.0)


def test_forked_child_is_a_new_environment_with_its_own_sequence():
    # GIVEN a parent environment that has served two invocations
    parent = current_environment()
    parent.begin_invocation(context("p1"), GAP, parent.init_start_ns + S)
    parent.begin_invocation(context("p2"), GAP, parent.init_start_ns + 2 * S)
    read_end, write_end = os.pipe()
    forked_at = time.time_ns()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without running pytest's atexit
        try:
            child = current_environment()
            facts, init = begin(child, "c1", GAP, child.init_start_ns + S)
            message = " ".join(
                [
                    child.environment_id,
                    str(facts.invocation_seq),
                    str(facts.start),
                    str(child.pid),
                    str(init is not None),
                    str(child.init_start_ns),
                    child.init_start_source,
                ]
            )
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        env_id, seq, start, child_pid, has_init, child_start, source = pipe.read().split()
    os.waitpid(pid, 0)
    # the child's INIT starts at the fork, read from the OS like any process start
    assert source == SOURCE_PROCESS
    assert forked_at - clock_tick_ns() <= int(child_start) <= time.time_ns()
    # THEN the child has its own id, pid and sequence, and its first invocation carries INIT
    assert env_id != parent.environment_id
    assert (seq, start, int(child_pid), has_init) == ("1", COLD, pid, "True")
    assert parent.seq == 2


def test_an_invocations_facts_are_worked_out_once_when_asked():
    env = environment()
    env.mark_init_end(SOURCE_RUNTIME, T0 + S)
    invocation = env.begin_invocation(context("r1"), GAP, T0 + 2 * S)
    facts = invocation.facts()
    assert facts is invocation.facts()
    assert (facts.start, facts.invocation_seq, facts.request_id) == (COLD, 1, "r1")
    assert facts.invoke_start_ns == T0 + 2 * S
    assert facts.environment_age_s == pytest.approx(2.0)


def test_the_running_invocation_is_known_only_while_exactly_one_runs():
    env = environment()
    assert env.running_invocation() is None
    first = env.begin_invocation(context("r1"), GAP, T0 + S)
    assert env.running_invocation() is first
    second = env.begin_invocation(context("r2"), GAP, T0 + 2 * S)
    assert env.running_invocation() is None  # two at once: nobody can tell which
    assert env.end_invocation(first, T0 + 3 * S) is True
    assert env.running_invocation() is second
    assert env.end_invocation(second, T0 + 4 * S) is True
    assert env.running_invocation() is None
    assert env.last_end_ns == T0 + 4 * S


def test_a_timeout_and_the_end_of_the_same_invocation_export_it_exactly_once():
    env = environment()
    # the deadline comes first: the timeout is claimed, the late end exports nothing
    timed_out = env.begin_invocation(context("r1"), GAP, T0 + S)
    assert env.claim_timeout(timed_out.seq) is True
    assert env.claim_timeout(timed_out.seq) is False  # claimed once only
    assert env.end_invocation(timed_out, T0 + 2 * S) is False
    # the end comes first: nothing is left to claim
    finished = env.begin_invocation(context("r2"), GAP, T0 + 3 * S)
    assert env.end_invocation(finished, T0 + 4 * S) is True
    assert env.claim_timeout(finished.seq) is False


def test_restore_numbers_invocations_from_one_again():
    env = environment("snap-start")
    env.begin_invocation(context("before"), GAP, T0 + S)
    env.mark_restored(T0 + 10 * S)
    facts, init = begin(env, "after", GAP, T0 + 11 * S)
    assert (facts.invocation_seq, facts.start, env.seq) == (1, RESTORED, 1)
    assert init is not None
