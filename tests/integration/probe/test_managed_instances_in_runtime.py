"""The probe under Lambda Managed Instances, in the local Lambda with real awslambdaric.

With ``AWS_LAMBDA_MAX_CONCURRENCY=3`` the runtime forks 3 workers before any INIT; each
imports the handler (managed_instances.py) itself. For the probe each worker is an
environment of its own (DESIGN.md §2): its own id, its own INIT starting at the fork,
its own sequence, idle times and connections, and no freeze ever.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lifecycle_probe.emulator import EmulatorError, EnvironmentInfo, InvocationResult, LocalLambda
from lifecycle_probe.emulator.keepalive import Server
from lifecycle_probe.environment import clock_tick_ns, process_start_ns
from tests.integration.probe.support import init_lines, probe_lines, worker_disagreements

pytestmark = pytest.mark.integration

HANDLER = "managed_instances.handler"
INVOKED = "managed_instances: invoked"


def gated_burst(emulator: LocalLambda, count: int, gate: Path) -> list[InvocationResult]:
    """``count`` requests held in their handlers until all have started (one per worker)."""
    results: list[InvocationResult] = []
    thread = threading.Thread(
        target=lambda: results.extend(
            emulator.invoke_many([{"gate": str(gate)}] * count, concurrency=count)
        )
    )

    def invoked_in(env: EnvironmentInfo) -> int:
        # A just-created environment may have no log file yet.
        try:
            return emulator.logs(env.id).count(INVOKED)
        except EmulatorError:
            return 0

    thread.start()
    try:
        deadline = time.monotonic() + 20
        while sum(map(invoked_in, emulator.environments)) < count:
            assert time.monotonic() < deadline, f"{count} handlers never ran together"
            time.sleep(0.01)
    finally:
        gate.touch()
        thread.join(30)
    assert len(results) == count
    return results


@pytest.fixture
def keepalive_server():
    server = Server(idle_timeout_s=2.0)
    yield server
    server.stop()


def test_each_worker_is_an_environment_with_its_own_init(local_lambda, probe_handlers, tmp_path):
    # GIVEN a probed function with 3 workers per environment
    emulator = local_lambda(HANDLER, probe_handlers, max_concurrency=3, timeout_s=20)

    # WHEN a burst meets the new environment, then requests come one by one after a pause
    first = gated_burst(emulator, 3, tmp_path / "gate")
    emulator.wait_idle(timeout_s=15)
    time.sleep(0.3)
    later = [emulator.invoke({}) for _ in range(3)]

    # THEN every tag agrees with the ground truth, worker by worker: each worker's first
    # request cold, its later ones warm, all in the probe environment of that worker
    assert worker_disagreements(emulator) == []
    assert {r.environment for r in [*first, *later]} == {"env-1"}
    assert [r.start_type_truth for r in first] == ["cold"] * 3
    assert [r.start_type_truth for r in later] == ["warm"] * 3
    env = emulator.environment("env-1")
    assert len({r.worker_pid for r in later}) == 3

    # ... each worker wrote one INIT record of its own, under its own environment id
    inits = {line["pid"]: line for line in init_lines(emulator)["env-1"]}
    assert sorted(inits) == sorted(env.workers)
    assert len({line["environment_id"] for line in inits.values()}) == 3
    assert all(line["init_type"] == "lambda-managed-instances" for line in inits.values())
    for result in first:
        facts = result.response["facts"]
        assert facts["environment_id"] == inits[result.worker_pid]["environment_id"]
        assert facts["environment_id"] == result.response["environment_id_at_init"]
        assert result.response["ppid"] == env.pid

    # ... whose start is the worker's own start, the fork, not the runtime process's
    tick_ns = clock_tick_ns()
    parent_start_ns = process_start_ns(f"/proc/{env.pid}/stat")
    assert parent_start_ns is not None
    for pid, line in inits.items():
        own_start_ns = process_start_ns(f"/proc/{pid}/stat")
        assert own_start_ns is not None
        assert line["start_source"] == "process"
        assert abs(line["start_ns"] - own_start_ns) <= tick_ns
        assert line["start_ns"] - parent_start_ns >= tick_ns
        assert line["start_ns"] > env.spawn_end_ns
        # ... and whose end is the worker's own first request for work
        assert line["end_source"] == "runtime"
        own_first = next(r for r in first if r.worker_pid == pid)
        assert line["end_ns"] <= own_first.response["facts"]["invoke_start_ns"]

    # ... sequence numbers and idle times are per worker, and the idle time is the real
    # gap since that worker's previous invocation (the environment was never frozen)
    assert env.freezes == 0
    for result in later:
        facts = result.response["facts"]
        previous = next(r for r in first if r.worker_pid == result.worker_pid)
        assert facts["invocation_seq"] == 2
        assert facts["start"] == "warm"
        gap_s = (result.delivered_ns - previous.end_ns) / 1e9
        assert facts["idle_s"] >= 0.3
        assert abs(facts["idle_s"] - gap_s) < 0.1


def test_connections_are_tracked_per_worker(
    local_lambda, probe_handlers, tmp_path, keepalive_server
):
    # GIVEN workers that each open a keep-alive connection at INIT, to a server that
    # drops connections idle for 2 s
    emulator = local_lambda(
        HANDLER,
        probe_handlers,
        max_concurrency=3,
        timeout_s=20,
        env={"MI_HTTP_URL": f"http://127.0.0.1:{keepalive_server.port}/"},
    )

    # WHEN each worker serves a request at once, and another one after 2.5 s idle
    first = gated_burst(emulator, 3, tmp_path / "gate")
    emulator.wait_idle(timeout_s=15)
    time.sleep(2.5)
    later = [emulator.invoke({}) for _ in range(3)]
    assert worker_disagreements(emulator) == []

    # THEN each worker has its own INIT connection and reused it at first
    init_connections = {r.worker_pid: r.response["init_connection"] for r in first}
    assert len(set(init_connections.values())) == 3
    assert all(r.response["connection"] == init_connections[r.worker_pid] for r in first)
    # ... and after the idle cut-off each worker found its own connection dropped: the
    # probe reports it in that worker's record, as made at that worker's INIT
    assert len({r.worker_pid for r in later}) == 3
    assert all(r.response["connection"] != init_connections[r.worker_pid] for r in later)
    events = [
        line
        for line in probe_lines(emulator)["env-1"]
        if line["lifecycle_probe"] == "event" and line["name"] == "lifecycle.connection.stale"
    ]
    by_request = {event["request_id"]: event for event in events}
    assert sorted(by_request) == sorted(r.request_id for r in later)
    for result in later:
        event = by_request[result.request_id]
        assert event["environment_id"] == result.response["facts"]["environment_id"]
        assert event["lifecycle.connection.outcome"] == "detected"
        assert event["lifecycle.connection.created_in"] == "init"
        assert event["server.port"] == keepalive_server.port
        assert event["lifecycle.connection.idle_s"] >= 2.5


def test_no_freeze_is_counted_for_a_connection(local_lambda, probe_handlers):
    server = Server(idle_timeout_s=0.5)
    try:
        emulator = local_lambda(
            HANDLER,
            probe_handlers,
            max_concurrency=1,
            env={"MI_HTTP_URL": f"http://127.0.0.1:{server.port}/"},
        )
        emulator.invoke({})
        time.sleep(0.8)
        second = emulator.invoke({})
        (event,) = [
            line
            for line in probe_lines(emulator)[second.environment]
            if line["lifecycle_probe"] == "event" and line["request_id"] == second.request_id
        ]
        assert event["lifecycle.connection.outcome"] == "detected"
        assert event["lifecycle.connection.freezes"] == 0
    finally:
        server.stop()
