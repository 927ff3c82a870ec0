"""OpenTelemetry export from real runtime processes (awslambdaric) in the local Lambda."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.integration.probe.otlp import read_otlp, total

pytestmark = pytest.mark.integration


def otel_env(path, flush):
    return {
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
        "LIFECYCLE_PROBE_OTLP_FILE": str(path),
        "LIFECYCLE_PROBE_FLUSH": flush,
    }


@pytest.mark.parametrize("flush", ["after-response", "sync"])
def test_otlp_file_spans_and_metrics_agree_with_ground_truth(
    local_lambda, probe_handlers, tmp_path, flush
):
    # GIVEN a function whose INIT imports a slow module (120 ms) and sleeps 50 ms more
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda("traced.handler", probe_handlers, env=otel_env(path, flush))
    # WHEN it serves a burst (two environments), warm requests and a failure
    results = emulator.invoke_many([{"sleep_s": 0.3}] * 2, concurrency=2)
    results += [emulator.invoke({}) for _ in range(3)]
    results.append(emulator.invoke({"fail": True}))
    emulator.close()  # every runtime process is gone: the file holds all there will be
    spans, points = read_otlp(path)
    truth = {r.request_id: r for r in results}
    environments = {r.environment for r in results}
    assert len(environments) == 2
    # THEN one lambda.init per environment, covering INIT's 170 ms of work
    inits = [s for s in spans if s["name"] == "lambda.init"]
    assert len(inits) == len(environments)
    for init in inits:
        duration_s = (int(init["endTimeUnixNano"]) - int(init["startTimeUnixNano"])) / 1e9
        assert duration_s >= 0.17
        assert init["attrs"]["lifecycle.init.end_source"] == "runtime"
    # with the slow module's import as a child of INIT, from the function's code
    slow = [s for s in spans if s["attrs"].get("code.namespace") == "slow_dependency"]
    assert len(slow) == len(environments)
    init_ids = {s["spanId"] for s in inits}
    for span in slow:
        assert span["parentSpanId"] in init_ids
        assert span["attrs"]["lifecycle.import.origin"] == "function"
        assert span["attrs"]["lifecycle.import.self_s"] >= 0.12
    # and one invocation span per request whose tags agree with the ground truth
    invocations = {s["attrs"]["faas.invocation_id"]: s for s in spans if s["kind"] == 2}
    assert set(invocations) == set(truth)
    for request_id, span in invocations.items():
        result = truth[request_id]
        assert span["attrs"]["lifecycle.start"] == result.start_type_truth
        assert span["attrs"]["faas.coldstart"] is result.cold
        assert span["attrs"]["faas.instance"] == result.log_stream
        assert span["name"] == "lifecycle-demo"
    seqs = Counter(
        (truth[r].environment, s["attrs"]["lifecycle.invocation_seq"])
        for r, s in invocations.items()
    )
    assert all(count == 1 for count in seqs.values())
    failed = [s for s in invocations.values() if s["attrs"]["lifecycle.outcome"] == "error"]
    assert len(failed) == 1
    assert failed[0]["status"]["code"] == 2  # STATUS_CODE_ERROR
    # the metrics sum to the truth
    assert total(points, "faas.invocations") == len(results)
    assert total(points, "faas.coldstarts") == sum(r.cold for r in results)
    assert total(points, "faas.errors") == 1
    assert {p["temporality"] for p in points if p["metric"] == "faas.invocations"} == {1}


def test_after_response_flush_registers_an_extension_and_keeps_the_caller_waiting_for_nothing(
    local_lambda, probe_handlers, tmp_path
):
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda("traced.handler", probe_handlers, env=otel_env(path, "after-response"))
    first, second = emulator.invoke({}), emulator.invoke({})
    env = emulator.environment(first.environment)
    assert second.environment == first.environment
    # THEN the probe's internal extension registered during INIT, and the environment was
    # frozen only after it had exported (the spans are in the file before we read it)
    assert env.extensions == ("lifecycle-probe",)
    spans, _ = read_otlp(path)
    names = Counter(s["name"] for s in spans)
    assert names["lifecycle-demo"] == 2
    assert names["lambda.init"] == 1
    # the OpenTelemetry SDK is imported after the first response, not before it: the same
    # function flushing in sync mode makes its first caller wait for that import
    sync = local_lambda(
        "traced.handler", probe_handlers, env=otel_env(tmp_path / "s.jsonl", "sync")
    )
    sync_first = sync.invoke({})
    assert first.duration_ms < sync_first.duration_ms / 2, (
        first.duration_ms,
        sync_first.duration_ms,
    )


def test_a_timeout_is_reported_before_lambda_ends_the_invocation(
    local_lambda, probe_handlers, tmp_path
):
    # GIVEN a 1 s function timeout and flushing through the internal extension
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(
        "traced.handler", probe_handlers, env=otel_env(path, "after-response"), timeout_s=1.0
    )
    quick = emulator.invoke({})
    # WHEN an invocation runs past its deadline (the local Lambda kills the environment)
    slow = emulator.invoke({"sleep_s": 5})
    after = emulator.invoke({})
    emulator.close()
    assert (quick.outcome, slow.outcome, after.outcome) == ("ok", "timeout", "ok")
    spans, points = read_otlp(path)
    invocations = {s["attrs"]["faas.invocation_id"]: s for s in spans if s["kind"] == 2}
    # THEN the extension exported it as a timeout before the kill, ending at the deadline
    timed_out = invocations[slow.request_id]
    assert timed_out["attrs"]["lifecycle.outcome"] == "timeout"
    assert timed_out["status"]["code"] == 2
    assert abs(int(timed_out["endTimeUnixNano"]) - slow.end_ns) < 300_000_000
    assert invocations[quick.request_id]["attrs"]["lifecycle.outcome"] == "ok"
    assert invocations[after.request_id]["attrs"]["lifecycle.start"] == "cold"
    assert total(points, "faas.timeouts") == 1
    assert total(points, "faas.invocations") == 3
