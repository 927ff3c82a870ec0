"""The local Lambda drives real awslambdaric processes through Lambda's lifecycle."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import time

import pytest

from lifecycle_probe.emulator import (
    EmulatorError,
    FunctionConfig,
    InvocationResult,
    LocalLambda,
    process_state,
)
from tests.integration.emulator.emulator_support import alive, in_flight_together

pytestmark = pytest.mark.integration

LOG_STREAM = re.compile(r"^\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}$")
TRACE_ID = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=1$")


def wait_until(predicate, timeout_s=5.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def test_cold_then_warm_reuses_one_environment(local_lambda, handlers_dir):
    emulator = local_lambda(
        "emu_basic.handler",
        handlers_dir,
        env={"USER_VARIABLE": "from-user"},
        function_name="demo-fn",
        memory_mb=256,
        region="eu-west-1",
    )

    results = [emulator.invoke({"n": n}) for n in range(3)]
    first, second, third = results

    assert [r.outcome for r in results] == ["ok", "ok", "ok"]
    assert (first.cold, first.init_type, first.start_type_truth) == (True, "on-demand", "cold")
    assert (second.cold, second.start_type_truth) == (False, "warm")
    assert (third.cold, third.start_type_truth) == (False, "warm")
    assert len({r.environment for r in results}) == 1
    assert {r.pid for r in results} == {first.response["pid"]}
    # The module global keeps counting: the same process served all three.
    assert [r.response["count"] for r in results] == [1, 2, 3]
    assert [r.response["request_id"] for r in results] == [r.request_id for r in results]

    [env] = emulator.environments
    assert env.id == first.environment
    assert env.pid == first.pid
    assert env.invocations == 3
    assert env.request_ids == tuple(r.request_id for r in results)
    assert env.spawn_start_ns <= env.spawn_end_ns <= env.first_next_ns <= env.init_done_ns
    assert env.init_done_ns <= first.delivered_ns <= first.end_ns <= second.start_ns
    assert first.init_duration_ms == pytest.approx(env.init_duration_ms)
    assert second.init_duration_ms is None
    assert first.duration_ms == pytest.approx((first.end_ns - first.delivered_ns) / 1e6)

    seen = first.response["env"]
    assert seen["_HANDLER"] == "emu_basic.handler"
    assert seen["AWS_LAMBDA_FUNCTION_NAME"] == "demo-fn"
    assert seen["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert seen["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert seen["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/demo-fn"
    assert seen["AWS_LAMBDA_LOG_STREAM_NAME"] == env.log_stream == first.log_stream
    assert LOG_STREAM.match(env.log_stream)
    assert seen["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert seen["AWS_LAMBDA_RUNTIME_API"] == f"127.0.0.1:{env.port}"
    assert seen["AWS_REGION"] == seen["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert seen["LAMBDA_TASK_ROOT"] == str(handlers_dir) == first.response["cwd"]
    assert seen["PYTHONPATH"].split(":")[0] == str(handlers_dir)
    assert seen["USER_VARIABLE"] == "from-user"
    assert seen["AWS_LAMBDA_EXEC_WRAPPER"] is None
    assert TRACE_ID.match(first.trace_id)
    assert seen["_X_AMZN_TRACE_ID"] == first.trace_id
    assert first.response["function_arn"] == (
        "arn:aws:lambda:eu-west-1:123456789012:function:demo-fn"
    )
    assert 0 < first.response["remaining_ms"] <= 3000

    logs = emulator.logs(env.id)
    assert "basic handler invoked: count=3" in logs
    assert f"START RequestId: {first.request_id} Version: $LATEST" in logs
    assert f"REPORT RequestId: {first.request_id}\tDuration: " in logs
    assert logs.count("Init Duration: ") == 1
    assert emulator.truth == results


def test_headers_the_runtime_reads_and_handler_errors(local_lambda, handlers_dir):
    emulator = local_lambda("emu_basic.handler", handlers_dir)
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

    ok = emulator.invoke(
        {},
        client_context={"custom": {"tenant": "t-1"}, "client": {}, "env": {}},
        cognito_identity={"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"},
        trace_id=trace,
    )
    failed = emulator.invoke({"raise": "handler says no"})
    after = emulator.invoke({})

    assert ok.response["client_context"] == {"tenant": "t-1"}
    assert ok.response["identity_id"] == "id-1"
    assert ok.response["env"]["_X_AMZN_TRACE_ID"] == ok.trace_id == trace
    assert failed.outcome == "error"
    assert failed.error_type == "ValueError"
    assert failed.error["errorType"] == "ValueError"
    assert failed.error["errorMessage"] == "handler says no"
    assert failed.error["requestId"] == failed.request_id
    assert failed.response is None
    # A handler error does not cost the environment.
    assert after.ok
    assert after.environment == ok.environment
    assert after.response["count"] == 3
    assert emulator.environment(ok.environment).state == "idle"


def test_environment_is_frozen_between_invocations(local_lambda, handlers_dir):
    emulator = local_lambda("emu_basic.handler", handlers_dir)

    first = emulator.invoke()
    env = emulator.environment(first.environment)
    assert env.frozen
    assert env.state == "idle"
    assert process_state(first.pid) == "T"

    emulator.freeze_for(0.2)
    assert process_state(first.pid) == "T"

    second = emulator.invoke()
    # Thawed while it ran: the handler saw itself running.
    assert second.response["state"] == "R"
    assert process_state(second.pid) == "T"
    env = emulator.environment(first.environment)
    assert env.freezes == 2
    assert env.last_freeze_ns > second.end_ns
    assert first.end_ns < env.last_thaw_ns <= second.delivered_ns


def test_concurrent_burst_scales_out(local_lambda, handlers_dir, tmp_path):
    emulator = local_lambda("emu_basic.handler", handlers_dir)

    burst = in_flight_together(emulator, 3, tmp_path / "burst")

    assert all(r.ok for r in burst)
    assert all(r.cold and r.start_type_truth == "cold" for r in burst)
    assert len({r.environment for r in burst}) == 3
    assert len({r.pid for r in burst}) == 3
    assert all(process_state(r.pid) == "T" for r in burst)

    # The next wave finds them all idle: no new environment, all warm.
    wave = in_flight_together(emulator, 3, tmp_path / "wave")
    assert {r.environment for r in wave} == {r.environment for r in burst}
    assert not any(r.cold for r in wave)
    assert len(emulator.environments) == 3


def test_idle_environment_is_reaped(local_lambda, handlers_dir):
    emulator = local_lambda("emu_basic.handler", handlers_dir, idle_timeout_s=0.3)

    first = emulator.invoke()
    wait_until(lambda: not emulator.environment(first.environment).alive, what="the reap")

    env = emulator.environment(first.environment)
    assert env.end_reason == "reaped"
    assert env.exit_status == -signal.SIGKILL
    assert (env.ended_ns - env.last_freeze_ns) / 1e9 >= 0.3
    assert not alive(first.pid)

    second = emulator.invoke()
    assert second.cold
    assert second.environment != first.environment
    assert second.pid != first.pid


def test_timeout_kills_and_replaces_the_environment(local_lambda, handlers_dir):
    emulator = local_lambda("emu_basic.handler", handlers_dir, timeout_s=0.5)

    warm_up = emulator.invoke()
    slow = emulator.invoke({"sleep": 30})

    assert slow.outcome == "timeout"
    assert slow.error_type == "Sandbox.Timedout"
    assert "Task timed out after 0.50 seconds" in slow.error["errorMessage"]
    assert slow.environment == warm_up.environment
    assert not slow.cold
    assert 500 <= slow.duration_ms < 2500
    env = emulator.environment(slow.environment)
    assert (env.state, env.end_reason, env.exit_status) == ("dead", "timeout", -signal.SIGKILL)
    assert not alive(slow.pid)
    assert "Task timed out after 0.50 seconds" in emulator.logs(env.id)

    after = emulator.invoke()
    assert after.ok
    assert after.cold
    assert after.environment != slow.environment


def test_runtime_exit_and_kill(local_lambda, handlers_dir):
    emulator = local_lambda("emu_basic.handler", handlers_dir)

    crashed = emulator.invoke({"exit": 3})
    assert crashed.outcome == "error"
    assert crashed.error_type == "Runtime.ExitError"
    env = emulator.environment(crashed.environment)
    assert (env.end_reason, env.exit_status) == ("exited", 3)

    fresh = emulator.invoke()
    assert fresh.cold
    emulator.kill(fresh.environment)  # while frozen
    env = emulator.environment(fresh.environment)
    assert (env.end_reason, env.exit_status) == ("killed", -signal.SIGKILL)
    assert not alive(fresh.pid)
    assert emulator.invoke().cold


def test_init_error_is_reported_and_the_environment_replaced(local_lambda, handlers_dir):
    emulator = local_lambda("emu_init_error.handler", handlers_dir)

    first = emulator.invoke()
    second = emulator.invoke()

    for result in (first, second):
        assert result.outcome == "error"
        assert result.cold
        assert result.error_type == "RuntimeError"
        assert result.error["errorMessage"] == "boom at import"
        assert result.delivered_ns == 0
    assert first.environment != second.environment
    env = emulator.environment(first.environment)
    assert (env.state, env.end_reason, env.exit_status) == ("dead", "init-error", 1)
    assert env.init_error["errorType"] == "RuntimeError"
    assert env.invocations == 0
    assert "emu_init_error: about to fail INIT" in emulator.logs(env.id)


def test_runtime_exit_during_init_is_an_init_error(local_lambda, handlers_dir):
    emulator = local_lambda("emu_exit_at_init.handler", handlers_dir)

    result = emulator.invoke()

    assert result.outcome == "error"
    assert result.error_type == "Runtime.ExitError"
    assert "exit status 7" in result.error["errorMessage"]
    env = emulator.environment(result.environment)
    assert (env.end_reason, env.exit_status, env.first_next_ns) == ("exited", 7, None)
    assert "emu_exit_at_init: exiting during INIT" in emulator.logs(env.id)


def test_missing_exec_wrapper_is_an_init_error(local_lambda, handlers_dir, tmp_path):
    emulator = local_lambda("emu_basic.handler", handlers_dir, exec_wrapper=tmp_path / "absent")

    result = emulator.invoke()

    assert result.outcome == "error"
    assert result.error_type == "Runtime.InvalidEntrypoint"
    assert emulator.environment(result.environment).end_reason == "init-error"


def test_exec_wrapper_runs_the_runtime(local_lambda, handlers_dir, tmp_path):
    wrapper = tmp_path / "wrapper.sh"
    shutil.copy(handlers_dir / "wrapper.sh", wrapper)
    wrapper.chmod(0o755)
    emulator = local_lambda("emu_basic.handler", handlers_dir, exec_wrapper=wrapper)

    result = emulator.invoke()

    assert result.ok
    assert result.response["env"]["WRAPPED"] == "yes"
    assert result.response["env"]["AWS_LAMBDA_EXEC_WRAPPER"] == str(wrapper)
    # The wrapper exec'd the runtime: same process, same pid.
    assert result.response["pid"] == result.pid


def test_provisioned_concurrency_serves_first(local_lambda, handlers_dir, tmp_path):
    emulator = local_lambda("emu_basic.handler", handlers_dir, provisioned_concurrency=2)

    provisioned = emulator.environments
    assert [e.init_type for e in provisioned] == ["provisioned-concurrency"] * 2
    assert all(e.frozen and process_state(e.pid) == "T" for e in provisioned)

    burst = in_flight_together(emulator, 3, tmp_path / "gate")

    by_type = sorted((r.init_type, r.start_type_truth, r.cold) for r in burst)
    assert by_type == [
        ("on-demand", "cold", True),
        ("provisioned-concurrency", "provisioned", True),
        ("provisioned-concurrency", "provisioned", True),
    ]
    for result in burst:
        expected = "provisioned-concurrency" if result.init_type != "on-demand" else "on-demand"
        assert result.response["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == expected
    later = emulator.invoke()
    assert later.init_type == "provisioned-concurrency"
    assert later.start_type_truth == "warm"


def test_proactive_initialisation(local_lambda, handlers_dir):
    emulator = local_lambda("emu_basic.handler", handlers_dir)

    [ahead] = emulator.pre_initialise(1, "proactive")
    assert (ahead.init_type, ahead.state, ahead.frozen) == ("proactive", "idle", True)
    emulator.freeze_for(0.1)
    first = emulator.invoke()
    second = emulator.invoke()

    assert first.environment == ahead.id
    assert (first.cold, first.start_type_truth) == (True, "proactive")
    assert first.response["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert (first.delivered_ns - ahead.init_done_ns) / 1e9 >= 0.1
    assert second.start_type_truth == "warm"


def test_snap_start_restores_after_the_snapshot_pause(local_lambda, handlers_dir, tmp_path):
    emulator = local_lambda(
        "emu_snap.handler", handlers_dir, init_type="snap-start", snapshot_pause_s=0.3
    )

    [held] = emulator.pre_initialise(1, "snap-start")
    assert (held.state, held.frozen) == ("snapshot", True)
    assert process_state(held.pid) == "T"
    assert held.restore_done_ns is None

    restored = emulator.invoke()
    warm = emulator.invoke()

    assert restored.environment == held.id
    assert (restored.cold, restored.init_type, restored.start_type_truth) == (
        True,
        "snap-start",
        "restored",
    )
    assert restored.response["before_snapshot"] is True
    assert restored.response["after_restore"] is True
    assert restored.response["init_type"] == "snap-start"
    env = emulator.environment(held.id)
    assert (env.restore_done_ns - env.first_next_ns) / 1e9 >= 0.3
    assert env.restore_done_ns <= restored.response["after_restore_ns"] <= env.restored_next_ns
    assert env.restored_next_ns <= restored.delivered_ns
    assert warm.start_type_truth == "warm"

    # Scaling out under snap-start restores new environments too.
    wave = in_flight_together(emulator, 2, tmp_path / "gate")
    assert sorted(r.start_type_truth for r in wave) == ["restored", "warm"]


def test_freeze_waits_for_an_internal_extension(local_lambda, handlers_dir, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    emulator = local_lambda(
        "emu_extension.handler",
        handlers_dir,
        env={"EXTENSION_GATE": str(gate), "EXTENSION_WORK_MS": "200"},
    )

    first = emulator.invoke(wait_for_freeze=False)

    assert first.ok
    assert first.response["registration"] == {
        "status": 200,
        "body": {
            "functionName": "lifecycle-demo",
            "functionVersion": "$LATEST",
            "handler": "emu_extension.handler",
        },
    }
    env = emulator.environment(first.environment)
    assert env.extensions == ("probe-test-extension",)
    # The runtime may already wait for work, but the extension is still busy.
    assert not env.frozen
    assert env.state == "post-invoke"
    assert process_state(first.pid) != "T"

    (gate / first.request_id).touch()
    emulator.wait_idle(first.environment)
    env = emulator.environment(first.environment)
    assert env.frozen
    assert process_state(first.pid) == "T"
    # The extension got its INVOKE with the runtime and then worked for 200 ms.
    assert (env.last_freeze_ns - first.delivered_ns) / 1e6 >= 200
    assert env.last_freeze_ns > first.end_ns

    (gate / "all").touch()
    second = emulator.invoke()
    assert second.environment == first.environment
    assert not second.cold
    assert second.response["seen"][0] == first.request_id
    assert second.response["first_event"] == {
        "eventType": "INVOKE",
        "deadlineMs": first.delivered_ns // 1_000_000 + 3000,
        "requestId": first.request_id,
        "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:lifecycle-demo",
        "tracing": {"type": "X-Amzn-Trace-Id", "value": first.trace_id},
    }

    emulator.reap(first.environment)
    env = emulator.environment(first.environment)
    assert env.end_reason == "reaped"
    assert env.exit_status == -signal.SIGTERM


def test_api_misuse_fails_clearly(handlers_dir):
    with pytest.raises(ValueError, match=r"module\.function"):
        FunctionConfig("nodot", handlers_dir)
    with pytest.raises(ValueError, match="init_type"):
        FunctionConfig("emu_basic.handler", handlers_dir, init_type="provisioned-concurrency")
    emulator = LocalLambda(FunctionConfig("emu_basic.handler", handlers_dir))
    with pytest.raises(EmulatorError, match="start"):
        emulator.invoke()
    emulator.close()
    with pytest.raises(EmulatorError, match="closed"):
        emulator.start()


def test_shutdown_event_reaches_a_subscribed_extension(local_lambda, handlers_dir, tmp_path):
    record = tmp_path / "shutdown.jsonl"
    emulator = local_lambda(
        "emu_extension.handler",
        handlers_dir,
        timeout_s=0.5,
        shutdown_grace_s=2.0,
        env={
            "EXTENSION_EVENTS": "INVOKE,SHUTDOWN",
            "EXTENSION_WORK_MS": "0",
            "EXTENSION_RECORD": str(record),
        },
    )

    timed_out = emulator.invoke({"sleep": 30})
    reaped = emulator.invoke()
    emulator.reap(reaped.environment)

    assert timed_out.outcome == "timeout"
    assert reaped.environment != timed_out.environment
    events = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(e["pid"], e["eventType"], e["shutdownReason"]) for e in events] == [
        (timed_out.pid, "SHUTDOWN", "timeout"),
        (reaped.pid, "SHUTDOWN", "spindown"),
    ]
    assert all(e["deadlineMs"] > timed_out.delivered_ns // 1_000_000 for e in events)
    for result, reason in ((timed_out, "timeout"), (reaped, "reaped")):
        env = emulator.environment(result.environment)
        # The runtime got SIGTERM and ended by it, within the grace period.
        assert (env.end_reason, env.exit_status) == (reason, -signal.SIGTERM)


def test_randomised_lifecycle_keeps_ground_truth_consistent(local_lambda, handlers_dir):
    rng = random.Random(20241128)
    emulator = local_lambda(
        "emu_basic.handler",
        handlers_dir,
        timeout_s=0.6,
        idle_timeout_s=0.3,
        provisioned_concurrency=1,
    )
    served = 0
    while served < 200:
        roll = rng.random()
        if roll < 0.5:
            width = rng.randint(1, 3)
            events = [{"sleep": rng.choice([0, 0, 0.02])} for _ in range(3 * width)]
            if rng.random() < 0.1:
                events[0] = {"sleep": 1.0}  # a timeout
            served += len(emulator.invoke_many(events, concurrency=width))
        elif roll < 0.75:
            emulator.invoke({"raise": "x"} if rng.random() < 0.1 else {})
            served += 1
        elif roll < 0.85:
            emulator.freeze_for(rng.choice([0.05, 0.6]))  # 0.6 s lets the reaper act
        elif roll < 0.95:
            live = [e for e in emulator.environments if e.alive]
            if live:
                emulator.kill(rng.choice(live).id)
        else:
            emulator.pre_initialise(1, "proactive")
        for env in emulator.environments:
            if env.alive and env.frozen:
                assert process_state(env.pid) == "T", env

    environments = {e.id: e for e in emulator.environments}
    served_by: dict[str, list[InvocationResult]] = {}
    for result in sorted(emulator.truth, key=lambda r: r.delivered_ns):
        served_by.setdefault(result.environment, []).append(result)
    for env_id, results in served_by.items():
        first, *rest = results
        assert first.cold
        assert (
            first.start_type_truth
            == {
                "on-demand": "cold",
                "provisioned-concurrency": "provisioned",
                "proactive": "proactive",
            }[first.init_type]
        )
        assert all(not r.cold and r.start_type_truth == "warm" for r in rest)
        assert environments[env_id].request_ids == tuple(r.request_id for r in results)
        assert len({r.pid for r in results}) == 1
    reasons = {e.end_reason for e in environments.values()}
    assert {"killed", "reaped", "timeout"} <= reasons
