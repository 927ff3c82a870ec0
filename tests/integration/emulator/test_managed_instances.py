"""Lambda Managed Instances in the local Lambda: N worker processes per environment.

``FunctionConfig(max_concurrency=N)`` runs each environment's runtime with
``AWS_LAMBDA_MAX_CONCURRENCY=N``: ``awslambdaric`` forks N workers, each with its own
INIT, serving requests concurrently from one Runtime API, never frozen.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from lifecycle_probe.emulator import (
    COLD,
    WARM,
    EmulatorError,
    EmulatorTimeout,
    FunctionConfig,
    InvocationResult,
    LocalLambda,
    process_state,
)
from tests.integration.emulator.emulator_support import alive

pytestmark = pytest.mark.integration

BASIC_LINE = "basic handler invoked"


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[1])


def wait_for(predicate, timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise EmulatorTimeout(f"{what} not reached within {timeout_s} s")
        time.sleep(0.01)


def lines_logged(emulator: LocalLambda, text: str) -> int:
    """How many times ``text`` is in the logs (a just-created environment may have none)."""
    found = 0
    for env in emulator.environments:
        with contextlib.suppress(EmulatorError):
            found += emulator.logs(env.id).count(text)
    return found


def gated_burst(emulator: LocalLambda, count: int, gate: Path) -> list[InvocationResult]:
    """``count`` requests held in their handlers (emu_basic) until all have started."""
    results: list[InvocationResult] = []
    worker = threading.Thread(
        target=lambda: results.extend(
            emulator.invoke_many([{"gate": str(gate)}] * count, concurrency=count)
        )
    )
    worker.start()
    try:
        wait_for(
            lambda: lines_logged(emulator, BASIC_LINE) >= count,
            what=f"{count} handlers running together",
        )
    finally:
        gate.touch()
        worker.join(30)
    assert len(results) == count
    return results


@pytest.fixture
def managed(local_lambda, handlers_dir):
    def make(max_concurrency: int = 3, **options) -> LocalLambda:
        emulator: LocalLambda = local_lambda(
            "emu_basic.handler", handlers_dir, max_concurrency=max_concurrency, **options
        )
        return emulator

    return make


def test_a_burst_is_served_by_distinct_workers_of_one_environment(managed, tmp_path):
    # GIVEN a function with 3 workers per environment
    emulator = managed(3, timeout_s=20)

    # WHEN 3 requests are in flight together
    results = gated_burst(emulator, 3, tmp_path / "gate")

    # THEN one environment served them, each in its own worker process: a child of the
    # runtime process, which the local Lambda recorded as that request's worker
    assert {r.environment for r in results} == {"env-1"}
    assert [r.outcome for r in results] == ["ok"] * 3
    env = emulator.environment("env-1")
    assert env.max_concurrency == 3
    pids = {r.worker_pid for r in results if r.worker_pid is not None}
    assert len(pids) == 3
    assert pids == set(env.workers)
    assert all(r.pid == env.pid and r.response["pid"] == r.worker_pid for r in results)
    assert all(parent_of(pid) == env.pid for pid in pids)
    # ... each worker's first request, which waited for its INIT: cold for that worker
    assert all(r.cold and r.start_type_truth == COLD for r in results)
    assert all(r.to_output()["worker_pid"] == r.worker_pid for r in results)
    # ... and the runtime saw the Managed Instances variables
    assert results[0].response["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == (
        "lambda-managed-instances"
    )


def test_workers_are_never_frozen_and_each_is_cold_then_warm(managed, tmp_path):
    emulator = managed(3, timeout_s=20)
    first = gated_burst(emulator, 3, tmp_path / "gate")
    emulator.wait_idle(timeout_s=15)
    env = emulator.environment("env-1")
    processes = [env.pid, *env.workers]

    # WHEN requests come one after another, with pauses between them
    later = []
    for _ in range(6):
        later.append(emulator.invoke({}))
        # THEN between invocations no process of the environment is stopped
        time.sleep(0.05)
        assert [process_state(pid) for pid in processes] == ["S"] * len(processes)

    # ... every one ran in a running (not thawed) worker of the same environment
    assert {r.environment for r in later} == {"env-1"}
    assert all(r.response["state"] == "R" for r in [*first, *later])
    # ... each worker went on from its own count: its first request cold, later ones warm
    assert all(r.start_type_truth == WARM and not r.cold for r in later)
    served: dict[int, list[int]] = {}
    for r in [*first, *later]:
        assert r.worker_pid is not None
        served.setdefault(r.worker_pid, []).append(r.response["count"])
    assert sorted(served) == sorted(env.workers)
    assert all(counts == list(range(1, len(counts) + 1)) for counts in served.values())
    # ... and the environment was never frozen
    env = emulator.environment("env-1")
    assert (env.freezes, env.frozen, env.last_freeze_ns, env.state) == (0, False, None, "idle")
    assert env.invocations == 9


def test_more_requests_than_workers_scale_out(managed, tmp_path):
    emulator = managed(2, timeout_s=20)

    results = gated_burst(emulator, 3, tmp_path / "gate")

    by_env: dict[str, set[int | None]] = {}
    for r in results:
        by_env.setdefault(r.environment, set()).add(r.worker_pid)
    assert sorted(len(workers) for workers in by_env.values()) == [1, 2]
    assert len(emulator.environments) == 2
    assert all(r.start_type_truth == COLD for r in results)


def test_an_init_error_in_the_workers_is_reported_once(local_lambda, handlers_dir):
    emulator = local_lambda("emu_init_error.handler", handlers_dir, max_concurrency=3)

    result = emulator.invoke({})

    # THEN the request fails with the INIT error, as on Lambda (default)
    assert result.outcome == "error"
    assert result.cold
    assert result.error["errorType"] == "RuntimeError"
    assert "boom at import" in result.error["errorMessage"]
    env = emulator.environment(result.environment)
    assert env.end_reason == "init-error"
    assert not env.alive
    # ... every worker ran (and failed) its own INIT, but only the first worker's
    # init/error was accepted: the others were refused (403), which the runtime client
    # takes as "already reported"
    logs = emulator.logs(result.environment)
    assert logs.count("emu_init_error: about to fail INIT") == 3
    assert logs.count("INIT error of another worker refused") == 2


def test_a_timeout_ends_only_its_invocation(managed):
    emulator = managed(2, timeout_s=1.0)

    # WHEN one of two concurrent invocations runs past the timeout
    slow, quick = emulator.invoke_many([{"sleep": 2.5}, {"sleep": 0.2}], concurrency=2)

    # THEN it times out for its caller, the other one completes, and the environment
    # lives on: Lambda Managed Instances do not enforce timeouts (the worker goes on)
    assert (slow.outcome, slow.error_type) == ("timeout", "Sandbox.Timedout")
    assert quick.outcome == "ok"
    assert quick.environment == slow.environment
    env = emulator.environment(slow.environment)
    assert env.alive
    assert env.end_reason is None
    assert alive(env.pid)
    assert process_state(slow.worker_pid) == "S"

    # ... the busy worker keeps its slot: of two new requests one scales out
    busy = emulator.invoke_many([{"sleep": 0.3}] * 2, concurrency=2)
    assert sorted(r.environment for r in busy) == ["env-1", "env-2"]

    # ... and once it is done its late response is refused and it serves again
    wait_for(
        lambda: "response after the timeout refused" in emulator.logs("env-1"),
        what="the late response",
    )
    # A burst as large as every live worker together, once each waits for work, leaves
    # none of them out (a smaller one may be served by the other environments alone; a
    # loaded machine may still route one before a worker asked again, and scale out: the
    # burst is repeated, boundedly, until the timed-out worker has served)
    served: set[int | None] = set()
    for _ in range(5):
        emulator.wait_idle()
        slots = 2 * sum(1 for info in emulator.environments if info.alive)
        again = emulator.invoke_many([{"sleep": 0.5}] * slots, concurrency=slots)
        assert [r.outcome for r in again] == ["ok"] * slots
        served |= {r.worker_pid for r in again}
        if slow.worker_pid in served:
            break
    assert slow.worker_pid in served


def test_close_leaves_no_worker_behind(handlers_dir):
    function = FunctionConfig("emu_basic.handler", handlers_dir, max_concurrency=3)
    with LocalLambda(function) as emulator:
        emulator.invoke_many([{"sleep": 0.2}] * 3, concurrency=3)
        env = emulator.environment("env-1")
    wait_for(lambda: not any(alive(pid) for pid in [env.pid, *env.workers]), 5.0, "exit")


@pytest.mark.parametrize(
    ("options", "function_options"),
    [
        ({}, {"max_concurrency": 0}),
        ({}, {"max_concurrency": "3"}),
        ({}, {"max_concurrency": 2, "init_type": "snap-start"}),
        ({"provisioned_concurrency": 1}, {"max_concurrency": 2}),
    ],
)
def test_impossible_configurations_are_refused(handlers_dir, options, function_options):
    function = FunctionConfig("emu_basic.handler", handlers_dir, **function_options)
    with pytest.raises(ValueError, match="max_concurrency"):
        LocalLambda(function, **options)


def test_provisioned_pre_initialisation_is_refused(local_lambda, handlers_dir):
    emulator = local_lambda("emu_basic.handler", handlers_dir, max_concurrency=2)
    with pytest.raises(ValueError, match="proactive"):
        emulator.provision(1)


def test_an_idle_environment_is_reaped(managed):
    emulator = managed(2, idle_timeout_s=0.5)
    result = emulator.invoke({})
    wait_for(lambda: not emulator.environment(result.environment).alive, 10.0, "the reap")
    assert emulator.environment(result.environment).end_reason == "reaped"
