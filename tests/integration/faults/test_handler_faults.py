"""The fault matrix, function side: every kind of handler exception (``SystemExit`` and
``KeyboardInterrupt`` included, which end the runtime process as they do on Lambda),
results the runtime cannot serialise, and a sink and hooks of the probe's that raise.

Each case runs the same function with and without the probe in the local Lambda (real
``awslambdaric``): the caller must get the same outcome, error type, message and stack
(less the probe's one frame), and each invocation must be in the OTLP file.
"""

from __future__ import annotations

import pytest

from tests.integration.faults.accounting import assert_one_warning_each
from tests.integration.probe.otlp import read_otlp

pytestmark = pytest.mark.integration

CALLER_BOUND_MS = 250.0
EXCEPTIONS = [
    "value_error",
    "own_class",
    "chained",
    "unprintable",
    "no_message",
    "recursion",
    "system_exit_0",
    "system_exit_2",
    "keyboard_interrupt",
]
UNSERIALISABLE = ["set", "object", "bytes", "datetime", "decimal", "nan", "self_reference"]
EVENTS = (
    [{"raise": kind} for kind in EXCEPTIONS]
    + [{"unserialisable": kind} for kind in UNSERIALISABLE]
    # (broken_parts.handler imports a module whose post-import hook raises, first)
    + [{"return": {"fine": True}, "import_colorsys": True}]
)


def outcome(result):
    """What the caller sees, less the probe's wrapper frame in the stack."""
    error = result.error
    if isinstance(error, dict):
        stack = [
            line
            for line in error.get("stackTrace", [])
            if "lifecycle_probe/decorator.py" not in line and "broken_parts.py" not in line
        ]
        # Frames name the module the handler lives in: the bare function's own file here.
        message = str(error.get("errorMessage", "")).replace(result.request_id, "<request>")
        error = {**error, "stackTrace": stack, "requestId": None, "errorMessage": message}
    return (result.outcome, result.response, result.error_type, error)


def run(emulator):
    return [emulator.invoke(event) for event in EVENTS]


def otel_env(path):
    return {
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
        "LIFECYCLE_PROBE_OTLP_FILE": str(path),
        "LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS": "500",
    }


@pytest.mark.parametrize("handler", ["probed_faults.handler", "broken_parts.handler"])
def test_every_handler_fault_reaches_the_caller_as_without_the_probe(
    local_lambda, fault_handlers, tmp_path, handler
):
    bare = run(local_lambda("fault_cases.bare", fault_handlers))
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(handler, fault_handlers, env=otel_env(path))
    probed = run(emulator)
    # THEN the caller sees exactly what the function without the probe gives
    for event, without, with_probe in zip(EVENTS, bare, probed, strict=True):
        assert outcome(with_probe) == outcome(without), event
    assert {r.error_type for r in probed if r.error_type} >= {
        "ValueError",
        "Runtime.ExitError",
        "Runtime.MarshalError",
    }
    # AND the probe's share of the caller's wait is bounded: a few ms on a warm
    # invocation; where the exception ends the runtime process, the record's export
    # before the exit, bounded by the flush timeout (0.5 s here)
    exits = [r.error_type == "Runtime.ExitError" for r in bare]
    added = [r.duration_ms - b.duration_ms for r, b in zip(probed, bare, strict=False)]
    warm = [a for a, r, ends in zip(added, probed, exits, strict=False) if not r.cold and not ends]
    at_exit = [a for a, ends in zip(added, exits, strict=False) if ends]
    print(
        f"FIGURE handler faults ({handler}): warm added max {max(warm):.1f} ms, "
        f"exiting added max {max(at_exit):.1f} ms"
    )
    assert max(warm) < CALLER_BOUND_MS
    assert max(at_exit) < 500 + CALLER_BOUND_MS
    logs = [emulator.logs(env) for env in {r.environment for r in probed}]
    emulator.close()
    # AND every invocation is in the OTLP file, even those whose exception ended the
    # runtime process (exported at exit), with the outcome the probe saw
    spans, points = read_otlp(path)
    invocations = {s["attrs"]["faas.invocation_id"]: s for s in spans if s["kind"] == 2}
    missing = [e for e, r in zip(EVENTS, probed, strict=False) if r.request_id not in invocations]
    assert not missing, missing
    for event, result in zip(EVENTS, probed, strict=False):
        span = invocations[result.request_id]
        expected = "error" if "raise" in event else "ok"
        assert span["attrs"]["lifecycle.outcome"] == expected, event
    assert sum(int(p["asInt"]) for p in points if p["metric"] == "faas.invocations") == len(probed)
    assert not [p for p in points if p["metric"] == "lifecycle.telemetry.dropped"]
    # AND a broken sink or hook is said once per place and process (environment),
    # however often it fails
    warnings = [w for log in logs for w in assert_one_warning_each(log)]
    if handler == "broken_parts.handler":
        assert any("raising sink failed" in w for w in warnings), warnings
        assert any("event request listener failed" in w for w in warnings), warnings
