"""``lifecycle_probe.telemetry_api`` in a real runtime (``awslambdaric``) under the local
Lambda: it subscribes, receives and parses Lambda's figures per request id, on demand
and after a SnapStart restore. The figures must equal the local Lambda's own.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# The handler is one of the emulator's fixtures: its INIT registers an internal extension
# through the local Lambda's Extensions API, for the probe's subscriber to use.
HANDLERS = Path(__file__).resolve().parents[1] / "fixtures" / "emulator_handlers"


def test_figures_per_request_after_an_on_demand_init(local_lambda):
    emulator = local_lambda("emu_telemetry_probe.handler", HANDLERS, memory_mb=192)

    first = emulator.invoke({})
    second = emulator.invoke({"wait_for": first.request_id})
    third = emulator.invoke({"wait_for": second.request_id})

    assert first.response["started"] is True
    # Bound to 127.0.0.1: this machine's /etc/hosts has no sandbox.localdomain.
    assert first.response["listener"][0] == "127.0.0.1"
    figures = second.response["figures"]
    line = next(
        line
        for line in emulator.logs(first.environment).splitlines()
        if line.startswith(f"REPORT RequestId: {first.request_id}")
    )
    assert figures["request_id"] == first.request_id
    assert figures["duration_ms"] == pytest.approx(
        (first.end_ns - first.delivered_ns) / 1e6, abs=1e-3
    )
    assert f"Billed Duration: {figures['billed_duration_ms']} ms" in line
    assert figures["billed_duration_ms"] == math.ceil(figures["duration_ms"])
    assert f"Max Memory Used: {figures['max_memory_used_mb']} MB" in line
    assert figures["max_memory_used_mb"] > 0
    assert figures["init_duration_ms"] == pytest.approx(first.init_duration_ms, abs=1e-3)
    assert figures["restore_duration_ms"] is None
    # The INIT belongs to the first request only.
    assert third.response["figures"]["init_duration_ms"] is None
    # Pending figures are handed over once each.
    assert first.request_id in second.response["pending"]
    assert first.request_id not in third.response["pending"]
    assert second.request_id in third.response["pending"]


def test_figures_after_a_snap_start_restore_carry_both_init_and_restore(local_lambda):
    emulator = local_lambda(
        "emu_telemetry_probe.handler", HANDLERS, init_type="snap-start", snapshot_pause_s=0.1
    )
    [held] = emulator.pre_initialise(1, "snap-start")

    restored = emulator.invoke({})
    warm = emulator.invoke({"wait_for": restored.request_id})

    assert restored.start_type_truth == "restored"
    env = emulator.environment(held.id)
    figures = warm.response["figures"]
    assert figures["request_id"] == restored.request_id
    # Lambda's INIT before the snapshot, and the restore, separately.
    assert figures["init_duration_ms"] == pytest.approx(env.init_duration_ms, abs=1e-3)
    assert figures["restore_duration_ms"] == pytest.approx(env.restore_duration_ms, abs=1e-3)
    assert figures["restore_duration_ms"] < figures["init_duration_ms"] + 1000
    assert figures["billed_duration_ms"] >= 1
