"""A runtime client the probe does not know (a custom runtime speaking the Runtime API
itself): the probe cannot see its responses, so it must not hold the invocation."""

from __future__ import annotations

import time

import pytest

from tests.integration.probe.otlp import read_otlp

pytestmark = pytest.mark.integration


def test_an_unknown_runtime_client_is_never_held_to_its_deadline(
    local_lambda, fault_handlers, tmp_path
):
    # GIVEN a function run by a custom runtime (custom_runtime.py, as the function's
    # command through its exec wrapper), after-response flushing asked for, 3 s timeout
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(
        "probed_faults.handler",
        fault_handlers,
        exec_wrapper=fault_handlers / "custom_runtime.sh",
        timeout_s=3.0,
        env={
            "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
            "LIFECYCLE_PROBE_OTLP_FILE": str(path),
            "LIFECYCLE_PROBE_FLUSH": "after-response",
        },
    )
    # WHEN it serves three requests, each waited for until the environment is frozen
    held = []
    results = []
    for n in range(3):
        started = time.monotonic()
        results.append(emulator.invoke({"return": {"n": n}}))
        held.append(time.monotonic() - started)
    assert [r.response for r in results] == [{"n": n} for n in range(3)]
    assert len({r.environment for r in results}) == 1
    # THEN no extension registered (it could never have seen a response), and no
    # invocation was held: before, each was held to its deadline and a second more (4 s)
    environment = emulator.environment(results[0].environment)
    assert environment.extensions == ()
    print(f"FIGURE unknown runtime: invoke+freeze max {max(held[1:]):.2f} s")
    assert max(held[1:]) < 1.0
    log = emulator.logs(results[0].environment)
    emulator.close()
    # AND every record was exported before its response (sync), with its real outcome
    spans, _ = read_otlp(path)
    invocations = {s["attrs"]["faas.invocation_id"]: s for s in spans if s["kind"] == 2}
    assert set(invocations) == {r.request_id for r in results}
    assert {s["attrs"]["lifecycle.outcome"] for s in invocations.values()} == {"ok"}
    # AND the function's log says once why flushing happens before the response
    assert log.count("not one the probe can hook") == 1
