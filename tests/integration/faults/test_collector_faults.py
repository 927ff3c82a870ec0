"""The fault matrix, collector side: real runtime processes (awslambdaric) in the local
Lambda exporting OTLP/HTTP to a collector that refuses, fails, is slow, hangs or resets.

For each fault: the caller gets the handler's result unchanged; the caller's latency and
the time the environment is held after the response are bounded; every invocation's
spans and metric points reach the collector once it is back, or are counted in
``lifecycle.telemetry.dropped``; the probe says so in one warning per kind, with the
collector's API key redacted, and the OpenTelemetry SDK's own lines stay out of the log.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.faults.accounting import assert_one_warning_each, unaccounted
from tests.integration.faults.servers import FaultCollector, free_port

pytestmark = pytest.mark.integration

SECRET = "k3y-S3CRET-8472"
FLUSH_TIMEOUT_S = 0.5
# Bounds, generous for a 2-core machine shared with other test runs. The caller's share
# with after-response flushing: the probe's work on the caller's path only (measured:
# a few ms); the environment's hold after the response: the flush timeout, plus the
# extension's own requests.
CALLER_BOUND_MS = 250.0
HOLD_BOUND_S = FLUSH_TIMEOUT_S + 1.5


def timed_invoke(emulator, event):
    started = time.monotonic()
    result = emulator.invoke(event)  # returns once the environment is frozen again
    return result, time.monotonic() - started


def settle(emulator, collector, results, tries=6):
    """Invoke until every request so far is delivered or counted as dropped (the last
    flushes of a fault may still be under way in the sink's thread)."""
    for _ in range(tries):
        if unaccounted(collector, [r.request_id for r in results]) == (0, 0):
            return
        results.append(emulator.invoke({"return": {"settle": True}}))
        collector.wait_for(
            lambda: unaccounted(collector, [r.request_id for r in results]) == (0, 0), 1.0
        )


FAULTS = {
    "refused": ("ConnectionRefusedError", False),
    "status:500": ("HTTP 500", False),
    "status:429": ("HTTP 429", False),
    # The answer did not come within the flush's time (the socket's own timeout).
    "slow": ("TimeoutError", True),
    "hang": ("TimeoutError", True),
    "reset": ("ECONNRESET", False),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_collector_costs_the_caller_nothing_and_loses_nothing_unaccounted(
    local_lambda, fault_handlers, collector_factory, fault
):
    kind, received_anyway = FAULTS[fault]
    # GIVEN a function exporting to a collector with this fault
    if fault == "refused":
        collector = FaultCollector(port=free_port())  # nothing listens there yet
    else:
        collector = collector_factory(fault, delay_s=2 * FLUSH_TIMEOUT_S)
    env = {
        **collector.env(SECRET),
        "LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS": str(int(FLUSH_TIMEOUT_S * 1000)),
    }
    emulator = local_lambda("probed_faults.handler", fault_handlers, env=env)
    # WHEN it serves four requests while the fault lasts
    timed = [timed_invoke(emulator, {"return": {"n": n}}) for n in range(4)]
    results = [result for result, _ in timed]
    # THEN each caller got the handler's own result
    assert [r.response for r in results] == [{"n": n} for n in range(4)]
    assert all(r.ok for r in results)
    assert len({r.environment for r in results}) == 1
    # AND paid nothing for the fault; the environment was held for the flush only
    warm = timed[1:]
    caller_ms = max(r.duration_ms for r, _ in warm)
    hold_s = max(seconds for _, seconds in warm)
    print(f"FIGURE {fault}: caller max {caller_ms:.1f} ms, invoke+freeze max {hold_s:.2f} s")
    assert caller_ms < CALLER_BOUND_MS
    assert hold_s < HOLD_BOUND_S
    # WHEN the collector is back
    if fault == "refused":
        collector.start()
        collector_factory_stop = collector
    else:
        collector.mode = "ok"
        collector_factory_stop = None
    try:
        settle(emulator, collector, results)
        ids = [r.request_id for r in results]
        # THEN every invocation is delivered or counted as dropped, by reason
        assert unaccounted(collector, ids) == (0, 0)
        dropped = collector.total("lifecycle.telemetry.dropped")
        reasons = {
            p["attrs"]["reason"]
            for p in collector.points()
            if p["metric"] == "lifecycle.telemetry.dropped"
        }
        assert reasons <= {"export_failed", "timeout"}
        if not received_anyway:
            # nothing reached the collector during the fault: delivered + dropped is exact
            delivered = len(collector.invocation_ids() & set(ids))
            spans_dropped = collector.total("lifecycle.telemetry.dropped", signal="spans")
            assert delivered + spans_dropped == len(ids), (delivered, spans_dropped, dropped)
        # AND the log says it once per kind, with the API key redacted, and without the
        # SDK's own lines
        log = emulator.logs(results[0].environment)
        warnings = assert_one_warning_each(log, SECRET)
        failed = [w for w in warnings if "export to" in w]
        assert failed, log
        assert any(kind in w for w in failed), failed
        assert all(f"127.0.0.1:{collector.port}/v1/" in w for w in failed)
        assert all("?<redacted>" in w for w in failed)
        assert len(failed) <= 4  # spans and metrics, a kind or two each
    finally:
        if collector_factory_stop is not None:
            collector_factory_stop.stop()


def test_a_freeze_in_the_middle_of_an_export_thawed_after_the_collector_has_gone(
    local_lambda, fault_handlers, collector_factory
):
    # GIVEN a collector that takes requests and never answers, and an invocation that
    # ends 0.35 s before its deadline: its flush (budget ~0.25 s) is cut off by the freeze
    # while the export (its own timeout: 1.5 s) is still waiting for the answer
    collector = collector_factory("ok")
    env = {**collector.env(SECRET), "LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS": "1500"}
    emulator = local_lambda("probed_faults.handler", fault_handlers, env=env, timeout_s=2.0)
    # (a first invocation pays the SDK's import after its response, so that the next
    # one's export starts at once, well inside its short flush)
    warm_up = emulator.invoke({"return": {"n": 0}})
    assert collector.wait_for(lambda: warm_up.request_id in collector.invocation_ids())
    collector.mode = "hang"
    sent = collector.requests
    first = emulator.invoke({"sleep_until_left_s": 0.35, "return": {"n": 1}})
    assert first.response == {"n": 1}
    assert first.environment == warm_up.environment
    assert collector.wait_for(lambda: collector.requests > sent, 5)
    # WHEN the collector goes while the environment is frozen, and the environment is
    # thawed by the next request
    collector.stop()
    emulator.freeze_for(0.3)
    second, hold_s = timed_invoke(emulator, {"return": {"n": 2}})
    assert second.response == {"n": 2}
    assert second.environment == first.environment
    assert second.duration_ms < CALLER_BOUND_MS
    assert hold_s < 1.5 + 1.5
    # AND the collector comes back on the same address
    collector.mode = "ok"
    collector.start()
    results = [warm_up, first, second]
    settle(emulator, collector, results)
    # THEN nothing is lost unaccounted: the cut-off export was sent again, or counted
    assert unaccounted(collector, [r.request_id for r in results]) == (0, 0)
    assert_one_warning_each(emulator.logs(first.environment), SECRET)


def test_a_hanging_collector_costs_a_sync_caller_at_most_the_flush_timeout(
    local_lambda, fault_handlers, collector_factory
):
    # GIVEN sync flushing (the export before the response) to a collector that hangs
    collector = collector_factory("hang")
    env = {
        **collector.env(SECRET),
        "LIFECYCLE_PROBE_FLUSH": "sync",
        "LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS": str(int(FLUSH_TIMEOUT_S * 1000)),
    }
    emulator = local_lambda("probed_faults.handler", fault_handlers, env=env)
    results = [emulator.invoke({"return": {"n": n}}) for n in range(3)]
    assert [r.response for r in results] == [{"n": n} for n in range(3)]
    # THEN each caller waits at most the flush timeout (plus the probe's own few ms)
    caller_ms = max(r.duration_ms for r in results[1:])
    print(f"FIGURE hang (sync): caller max {caller_ms:.1f} ms")
    assert caller_ms < FLUSH_TIMEOUT_S * 1000 + CALLER_BOUND_MS
    collector.mode = "ok"
    settle(emulator, collector, results)
    assert unaccounted(collector, [r.request_id for r in results]) == (0, 0)
    assert_one_warning_each(emulator.logs(results[0].environment), SECRET)
