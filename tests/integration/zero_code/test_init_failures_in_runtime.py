"""A failing INIT under the layer's exec wrapper reaches Lambda exactly as without the probe,
and leaves its telemetry (the failed ``lambda.init``, its imports, ``faas.init_errors``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.emf_spec import emf_problems, json_lines, metric_values
from tests.integration.probe.otlp import read_otlp, total
from tests.integration.zero_code.paths import OTEL_INSTRUMENT, WRAPPER

pytestmark = pytest.mark.integration

# The password in the DSN on the failing line of zc_raises_at_init.py.
PASSWORD = "Zc-Pa55w0rd-9f3b"
STATUS_ERROR = 2


@dataclass(frozen=True)
class Case:
    handler: str
    error_type: str
    message: str
    # the function's imports that finished before the failure
    imported: tuple[str, ...] = ()
    # the function's module, whose import failed (and took more than the 1 ms threshold)
    failed_import: str | None = None
    # imports that failed fast: a span of their own only if they took 1 ms or more
    maybe: tuple[str, ...] = ()
    setting: str | None = None  # the handler setting, when the local Lambda cannot take it


CASES = {
    "missing dependency": Case(
        "zc_missing_dependency.handler",
        "Runtime.ImportModuleError",
        "Unable to import module 'zc_missing_dependency': "
        "No module named 'zc_unpackaged_dependency'",
        ("zc_slow_helper",),
        "zc_missing_dependency",
        ("zc_unpackaged_dependency",),
    ),
    "wrong module name": Case(
        "zc_no_such_module.handler",
        "Runtime.ImportModuleError",
        "Unable to import module 'zc_no_such_module': No module named 'zc_no_such_module'",
        maybe=("zc_no_such_module",),
    ),
    "syntax error": Case(
        "zc_syntax_error.handler",
        "Runtime.UserCodeSyntaxError",
        "Syntax error in module 'zc_syntax_error': expected ':' (zc_syntax_error.py, line 6)",
        maybe=("zc_syntax_error",),
    ),
    "exception at INIT": Case(
        "zc_raises_at_init.handler",
        "ConnectionError",
        f"no route to postgresql://orders:{PASSWORD}@db.internal/orders",
        ("zc_slow_helper",),
        "zc_raises_at_init",
    ),
    "missing handler": Case(
        "zc_no_handler.handler",
        "Runtime.HandlerNotFound",
        "Handler 'handler' missing on module 'zc_no_handler'",
        ("zc_slow_helper", "zc_no_handler"),
    ),
    "built-in module": Case(
        "sys.handler",
        "Runtime.BuiltInModuleConflict",
        "Cannot use built-in module sys as a handler module",
    ),
    "malformed handler name": Case(
        "zc_fine.handler",
        "Runtime.MalformedHandlerName",
        "Bad handler 'zc_fine': not enough values to unpack (expected 2, got 1)",
        setting="zc_fine",
    ),
}


def failed_init(run_function, case, wrapper=None, **env):
    """What the local Lambda recorded of the failed INIT: the error, the runtime's error
    log line, its exit status."""
    if case.setting is not None:
        env["ZERO_CODE_HANDLER_SETTING"] = case.setting
    emulator = run_function(case.handler, wrapper, **env)
    result = emulator.invoke({})
    info = emulator.environment(result.environment)
    logs = emulator.logs(result.environment)
    emulator.close()
    assert result.outcome == "error"
    error_lines = [line for line in logs.splitlines() if line.startswith("[ERROR]")]
    return result.error, result.error_type, error_lines, info.init_error, info.exit_status


@pytest.mark.parametrize("name", list(CASES))
def test_a_failed_init_reaches_lambda_as_without_the_probe(run_function, tmp_path, name):
    case = CASES[name]
    otlp = tmp_path / "otlp.jsonl"
    without = failed_init(run_function, case)
    with_probe = failed_init(
        run_function,
        case,
        WRAPPER,
        LIFECYCLE_PROBE_EXPORTER="otlp-file",
        LIFECYCLE_PROBE_OTLP_FILE=str(otlp),
    )
    error, error_type, error_lines, init_error, exit_status = without
    # the runtime's own error, at INIT (awslambdaric 4 reports a missing handler there too)
    assert error_type == case.error_type
    assert error["errorType"] == case.error_type
    assert error["errorMessage"] == case.message
    assert init_error == error
    assert exit_status == 1
    assert len(error_lines) == 1
    # and with the probe: the very same error, stack trace, error log line and exit
    assert with_probe == without


def test_the_stack_trace_of_an_init_exception_is_the_functions(run_function):
    error = failed_init(run_function, CASES["exception at INIT"], WRAPPER)[0]
    frames = error["stackTrace"]
    # (the runtime's own report quotes the failing line, DSN and all, as without the probe)
    assert PASSWORD in frames[-1]
    # the import machinery's frames (as the runtime reports them without the probe), then
    # the function's three: module, open_pool(), connect(); nothing of the probe
    assert not [frame for frame in frames if "lifecycle_probe" in frame]
    own = [frame for frame in frames if "zc_raises_at_init.py" in frame]
    assert [frame.split(", in ")[1].split("\n")[0] for frame in own] == [
        "<module>",
        "open_pool",
        "connect",
    ]
    assert frames[-3:] == own
    assert "importlib/__init__.py" in frames[0]


@pytest.mark.parametrize("name", list(CASES))
def test_a_failed_init_leaves_its_telemetry(run_function, tmp_path, name):
    case = CASES[name]
    otlp = tmp_path / "otlp.jsonl"
    failed_init(
        run_function,
        case,
        WRAPPER,
        LIFECYCLE_PROBE_EXPORTER="otlp-file",
        LIFECYCLE_PROBE_OTLP_FILE=str(otlp),
    )
    text = otlp.read_text()
    spans, points = read_otlp(otlp)
    # one lambda.init span, on its own (no invocation ever began), failed with the type
    (init,) = [s for s in spans if s["name"] == "lambda.init"]
    assert not [s for s in spans if s["kind"] == 2]
    assert "parentSpanId" not in init or not init["parentSpanId"]
    assert init["status"] == {"code": STATUS_ERROR, "message": case.error_type}
    assert init["attrs"]["error.type"] == case.error_type
    assert init["attrs"]["lifecycle.init.failed"] is True
    assert init["attrs"]["lifecycle.init.start_source"] == "exec-wrapper"
    assert init["attrs"]["lifecycle.handler"] == (case.setting or case.handler)
    assert int(init["endTimeUnixNano"]) > int(init["startTimeUnixNano"])
    # the function's imports up to the failure, under INIT
    imports = {s["attrs"]["code.namespace"]: s for s in spans if s["name"] == "lambda.import"}
    function_imports = {m for m in imports if m.startswith("zc_")}
    expected = set(case.imported) | ({case.failed_import} if case.failed_import else set())
    assert expected <= function_imports <= expected | set(case.maybe)
    for module in case.imported:
        span = imports[module]
        assert int(span["startTimeUnixNano"]) >= int(init["startTimeUnixNano"])
        assert int(span["endTimeUnixNano"]) <= int(init["endTimeUnixNano"])
    if "zc_slow_helper" in case.imported:
        assert imports["zc_slow_helper"]["attrs"]["lifecycle.import.self_s"] >= 0.02
    if case.failed_import is not None:
        failed = imports[case.failed_import]
        assert failed["status"]["code"] == STATUS_ERROR
        assert failed["parentSpanId"] == init["spanId"]
    # one faas.init_errors point of that type
    (point,) = [p for p in points if p["metric"] == "faas.init_errors"]
    assert point["attrs"] == {"error.type": case.error_type, "lifecycle.init_type": "on-demand"}
    assert total(points, "faas.init_errors") == 1
    assert point["temporality"] == 1  # delta
    # never the error's message: it quotes the DSN of the failing line
    assert PASSWORD not in text
    assert "no route to" not in text


@pytest.mark.parametrize("name", ["exception at INIT", "missing dependency"])
def test_a_failed_init_with_the_default_exporter_writes_emf_and_one_log_line(run_function, name):
    # GIVEN the default exporter (EMF) and a runtime that logs JSON
    case = CASES[name]
    emulator = run_function(case.handler, WRAPPER, AWS_LAMBDA_LOG_FORMAT="JSON")
    result = emulator.invoke({})
    logs = emulator.logs(result.environment)
    emulator.close()
    assert result.error_type == case.error_type
    lines = json_lines(logs)
    # THEN one valid EMF document counts the failed INIT
    (document,) = [line for line in lines if "_aws" in line]
    assert emf_problems(document) == []
    assert metric_values(document) == {"InitErrors": [1.0]}
    assert document["error_type"] == case.error_type
    # and one JSON warning line names it, with its imports, and not its message
    (line,) = [line for line in lines if line.get("lifecycle_probe") == "init_failure"]
    assert line["level"] == "WARNING"
    assert line["error_type"] == case.error_type
    assert line["handler"] == case.handler
    assert "zc_slow_helper" in [i["module"] for i in line["slowest_imports"]]
    assert PASSWORD not in str(document) + str(line)
    assert case.message not in str(document) + str(line)


# -- chained with the OpenTelemetry layer's wrapper (the faithful stand-in) -------------------
# Its instrumentor imports the module named by ORIG_HANDLER at interpreter startup, then its
# otel_wrapper imports it again when the runtime resolves the handler.

OTEL_CASES = ["missing dependency", "exception at INIT", "missing handler"]


def otel_failed_init(run_function, chain, case, order, otlp):
    wrappers = {
        "otel alone": (OTEL_INSTRUMENT,),
        "otel-then-probe": (OTEL_INSTRUMENT, WRAPPER),
        "probe-then-otel": (WRAPPER, OTEL_INSTRUMENT),
    }[order]
    return failed_init(
        run_function,
        case,
        chain(*wrappers),
        LIFECYCLE_PROBE_EXPORTER="otlp-file",
        LIFECYCLE_PROBE_OTLP_FILE=str(otlp),
    )


def without_tracer_frames(frames):
    return [frame for frame in frames if "lifecycle_probe/imports.py" not in frame]


@pytest.mark.parametrize("order", ["otel-then-probe", "probe-then-otel"])
@pytest.mark.parametrize("name", OTEL_CASES)
def test_a_failed_init_chained_with_the_opentelemetry_layer(
    run_function, chain, tmp_path, name, order
):
    case = CASES[name]
    alone = otel_failed_init(run_function, chain, case, "otel alone", tmp_path / "alone.jsonl")
    otlp = tmp_path / "otlp.jsonl"
    error, error_type, error_lines, init_error, exit_status = otel_failed_init(
        run_function, chain, case, order, otlp
    )
    # the runtime's error: what it reports with the OpenTelemetry layer alone (about its
    # otel_wrapper module for an import error, a plain AttributeError for a missing handler)
    assert (error_type, error["errorMessage"]) == (alone[1], alone[0]["errorMessage"])
    assert (init_error, exit_status) == (error, 1)
    assert len(error_lines) == 1
    frames = error["stackTrace"]
    if order == "otel-then-probe" or name == "missing dependency":
        assert frames == alone[0]["stackTrace"]
    elif name == "exception at INIT":
        # the frames of the probe's import tracer, active since interpreter startup
        assert len(frames) == len(alone[0]["stackTrace"]) + 4
        assert without_tracer_frames(frames) == alone[0]["stackTrace"]
    else:
        # the AttributeError of the entry point's getattr: its trace ends in the probe's
        # frames, under otel_wrapper's import of the entry point; alone it ends in
        # otel_wrapper's own getattr
        assert "lifecycle_probe/init_failure.py" in frames[-1]
        assert "otel_wrapper.py" in alone[0]["stackTrace"][-1]
    # the failed INIT exported once, with the error type the runtime reported
    spans, points = read_otlp(otlp)
    (init,) = [s for s in spans if s["name"] == "lambda.init"]
    assert init["attrs"]["error.type"] == error_type
    assert total(points, "faas.init_errors") == 1
    assert PASSWORD not in otlp.read_text()
