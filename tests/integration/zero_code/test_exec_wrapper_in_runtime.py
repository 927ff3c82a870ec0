"""The layer's exec wrapper in the local Lambda: a third-party handler instrumented with no
code change, alone and chained with another layer's wrapper."""

from __future__ import annotations

import pytest

from lifecycle_probe.environment import clock_tick_ns
from tests.integration.probe.otlp import read_otlp, total
from tests.integration.zero_code.paths import OTEL_INSTRUMENT, WRAPPER

pytestmark = pytest.mark.integration

EVENTS = [{"order": 1}, {"order": 2}, {"order": 3}]


def otlp_env(tmp_path):
    return {
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
        "LIFECYCLE_PROBE_OTLP_FILE": str(tmp_path / "otlp.jsonl"),
    }


def results_without_probe(run_function):
    emulator = run_function("zc_fine.handler")
    results = [emulator.invoke(event) for event in EVENTS]
    emulator.close()
    return results


def assert_instrumented(tmp_path, results, baseline, imported_by=None, traced=True):
    # the function's own results, untouched by the probe
    assert [r.outcome for r in results] == ["ok"] * len(EVENTS)
    assert [r.response for r in results] == [r.response for r in baseline]
    assert results[0].response == {
        "echo": {"order": 1},
        "helper": "zc_fine_helper",
        "boto3": "boto3",
    }
    # one environment: cold, then warm, as the local Lambda says
    assert len({r.environment for r in results}) == 1
    assert [r.start_type_truth for r in results] == ["cold", "warm", "warm"]
    spans, points = read_otlp(tmp_path / "otlp.jsonl")
    invocations = {s["attrs"]["faas.invocation_id"]: s for s in spans if s["kind"] == 2}
    assert [invocations[r.request_id]["attrs"]["lifecycle.start"] for r in results] == [
        "cold",
        "warm",
        "warm",
    ]
    assert [invocations[r.request_id]["attrs"]["lifecycle.invocation_seq"] for r in results] == [
        1,
        2,
        3,
    ]
    # INIT from the wrapper's start, before any import of the function
    (init,) = [s for s in spans if s["name"] == "lambda.init"]
    assert init["attrs"]["lifecycle.init.end_source"] == "runtime"
    assert init["parentSpanId"] == invocations[results[0].request_id]["spanId"]
    imports = {s["attrs"]["code.namespace"]: s for s in spans if s["name"] == "lambda.import"}
    if not traced:
        # the function's module was imported at interpreter startup (the OpenTelemetry
        # layer's sitecustomize), before the probe's tracer: no span for any of its
        # imports, and none of that time under another import (otel_wrapper found it
        # imported already; zc_fine_helper alone takes 20 ms)
        assert init["attrs"]["lifecycle.init.start_source"] == "process"
        assert not {"zc_fine", "zc_fine_helper", "boto3"} & imports.keys()
        assert all(float(i["attrs"]["lifecycle.import.self_s"]) < 0.02 for i in imports.values())
        assert total(points, "faas.invocations") == len(EVENTS)
        assert total(points, "faas.coldstarts") == 1
        return spans
    assert init["attrs"]["lifecycle.init.start_source"] == "exec-wrapper"
    # the function's top-level imports, under INIT: its own module and boto3
    for module, origin in (
        ("zc_fine", "function"),
        ("zc_fine_helper", "function"),
        ("boto3", "site-packages"),
    ):
        span = imports[module]
        assert span["attrs"]["lifecycle.import.origin"] == origin
        assert int(span["startTimeUnixNano"]) >= int(init["startTimeUnixNano"])
        assert int(span["endTimeUnixNano"]) <= int(init["endTimeUnixNano"])
        assert "lifecycle.import.after_init" not in span["attrs"]
    assert imports["zc_fine_helper"]["attrs"]["lifecycle.import.self_s"] >= 0.02
    # nested as imported: the helper and boto3 inside the handler module's import
    assert imports["zc_fine_helper"]["parentSpanId"] == imports["zc_fine"]["spanId"]
    assert imports["boto3"]["parentSpanId"] == imports["zc_fine"]["spanId"]
    if imported_by is None:
        assert imports["zc_fine"]["parentSpanId"] == init["spanId"]
    else:  # the function's module imported by another wrapper's module, itself under INIT
        assert imports["zc_fine"]["parentSpanId"] == imports[imported_by]["spanId"]
        assert imports[imported_by]["parentSpanId"] == init["spanId"]
    # the entry point's own imports are not the function's: a probe module appears only
    # inside an import of the function's (connection tracking, loaded with urllib3)
    by_id = {s["spanId"]: s for s in spans}
    for module, span in imports.items():
        if module.startswith("lifecycle_probe"):
            while span["attrs"].get("code.namespace", "").startswith("lifecycle_probe"):
                span = by_id[span["parentSpanId"]]
            assert span["name"] == "lambda.import", module
    assert total(points, "faas.invocations") == len(EVENTS)
    assert total(points, "faas.coldstarts") == 1
    return spans


def test_the_wrapper_instruments_a_handler_with_no_code_change(run_function, tmp_path):
    baseline = results_without_probe(run_function)
    emulator = run_function("zc_fine.handler", WRAPPER, **otlp_env(tmp_path))
    results = [emulator.invoke(event) for event in EVENTS]
    logs = emulator.logs(results[0].environment)
    emulator.close()
    assert_instrumented(tmp_path, results, baseline)
    assert "Traceback" not in logs


def test_the_local_lambdas_own_exec_wrapper_setting_runs_the_layer_as_lambda_does(
    local_lambda, code_dir, run_function, tmp_path
):
    # GIVEN the layer's wrapper as the function's exec wrapper, with no stand-in between
    # (what `lifecycle-probe emulate --exec-wrapper` sets): the local Lambda starts the
    # runtime as a managed runtime does, the handler read from _HANDLER after the wrapper
    baseline = results_without_probe(run_function)
    emulator = local_lambda(
        "zc_fine.handler", code_dir, env=otlp_env(tmp_path), exec_wrapper=WRAPPER
    )
    results = [emulator.invoke(event) for event in EVENTS]
    emulator.close()
    # THEN the wrapper's handler entry ran, and the function is instrumented
    assert_instrumented(tmp_path, results, baseline)


CHAINS = {
    "probe-then-otel": (WRAPPER, OTEL_INSTRUMENT),
    "otel-then-probe": (OTEL_INSTRUMENT, WRAPPER),
    # the layer attached twice, the OpenTelemetry layer's wrapper between its two runs
    "probe-otel-probe": (WRAPPER, OTEL_INSTRUMENT, WRAPPER),
}


@pytest.mark.parametrize("order", list(CHAINS))
def test_the_wrapper_chains_with_the_opentelemetry_layers_wrapper(
    run_function, chain, tmp_path, order
):
    baseline = results_without_probe(run_function)
    wrappers = CHAINS[order]
    notes = tmp_path / "otel-notes.txt"
    emulator = run_function(
        "zc_fine.handler", chain(*wrappers), OTEL_STAND_IN_NOTES=str(notes), **otlp_env(tmp_path)
    )
    results = [emulator.invoke(event) for event in EVENTS]
    emulator.close()
    environment = emulator.environment(results[0].environment)
    otel_first = order == "otel-then-probe"
    imported_by = "otel_wrapper" if otel_first else None
    spans = assert_instrumented(tmp_path, results, baseline, imported_by, traced=not otel_first)
    # the other layer's wrapper ran too, around the probe's entry point or inside it, and
    # its instrumentor patched what it wraps (wrapt's FunctionWrapper) at startup
    wrapped = "zc_fine.handler" if otel_first else "lifecycle_probe.handler.handler"
    assert notes.read_text().splitlines() == [f"{wrapped} FunctionWrapper"] * len(EVENTS)
    # INIT starts when the runtime process started, not after a first Python ran in it:
    # at the OS's start tick at or before the spawn (the probe's wrapper first: its stamp
    # refines that tick; the OpenTelemetry layer's first: its Python ran before the stamp)
    (init,) = [s for s in spans if s["name"] == "lambda.init"]
    start = int(init["startTimeUnixNano"])
    tick = clock_tick_ns()
    spawned = environment.spawn_start_ns
    assert spawned - tick <= start <= spawned + 2 * tick + 20_000_000


def test_the_layer_attached_twice_instruments_once(run_function, chain, tmp_path):
    baseline = results_without_probe(run_function)
    emulator = run_function("zc_fine.handler", chain(WRAPPER, WRAPPER), **otlp_env(tmp_path))
    results = [emulator.invoke(event) for event in EVENTS]
    emulator.close()
    spans = assert_instrumented(tmp_path, results, baseline)
    assert len([s for s in spans if s["kind"] == 2]) == len(EVENTS)
