"""The zero-code entry point: ``_HANDLER=lifecycle_probe.handler.handler``."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest.mock import ANY

import pytest
from opentelemetry.sdk.metrics.export import NumberDataPoint, Sum
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from lifecycle_probe import imports, installation
from lifecycle_probe.config import Config
from lifecycle_probe.environment import current_environment, wrapper_start_ns
from lifecycle_probe.imports import (
    remove_post_import_hooks,
    stop_import_tracing,
    when_imported,
)
from lifecycle_probe.installation import reset_installation
from lifecycle_probe.rare_records import InitFailureRecord
from lifecycle_probe.records import COLD, WARM, ImportRecord
from lifecycle_probe.sinks import Sink, add_process_sink, remove_process_sink
from lifecycle_probe.sinks.otel import OtelSink
from lifecycle_probe.sinks.otel.memory import InMemoryMetricExporter
from lifecycle_probe.testing import FakeContext, capture_records, fresh_environment


@pytest.fixture(autouse=True)
def imports_as_in_a_runtime():
    """Modules come in through importlib alone, as in a Lambda runtime.

    pytest's assertion rewriter loads every module of a distribution that registers a
    pytest plugin (this one does: ``local_lambda``), so the entry point would come in
    through the rewriter's own loader frame, which no runtime has, and the tracebacks
    compared here would differ by that frame.
    """
    rewriters = [f for f in sys.meta_path if type(f).__name__ == "AssertionRewritingHook"]
    for rewriter in rewriters:
        sys.meta_path.remove(rewriter)
    yield
    sys.meta_path[0:0] = rewriters


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def make(name, body):
        (tmp_path / f"{name}.py").write_text(body)
        names.append(name)

    yield make
    for name in [*names, "lifecycle_probe.handler"]:
        sys.modules.pop(name, None)


def load_entry_point():
    sys.modules.pop("lifecycle_probe.handler", None)
    return importlib.import_module("lifecycle_probe.handler")


def test_wraps_the_functions_own_handler(user_module, monkeypatch):
    user_module("plain_app", "def handler(event, context):\n    return {'echo': event}\n")
    monkeypatch.setenv("LIFECYCLE_PROBE_HANDLER", "plain_app.handler")
    monkeypatch.setenv("LIFECYCLE_PROBE_EXPORTER", "none")
    entry = load_entry_point()
    with capture_records() as captured:
        assert entry.handler({"a": 1}, FakeContext()) == {"echo": {"a": 1}}
        assert entry.handler({"a": 2}, FakeContext()) == {"echo": {"a": 2}}
    assert captured.starts == [COLD, WARM]


def test_a_handler_that_already_carries_probe_is_recorded_once(user_module, monkeypatch):
    user_module(
        "probed_app",
        "from lifecycle_probe import probe, current\n"
        "@probe(exporter='none')\n"
        "def handler(event, context):\n    return current().invocation_seq\n",
    )
    monkeypatch.setenv("LIFECYCLE_PROBE_HANDLER", "probed_app.handler")
    entry = load_entry_point()
    with capture_records() as captured:
        assert [entry.handler({}, None) for _ in range(3)] == [1, 2, 3]
    assert captured.starts == [COLD, WARM, WARM]


def test_missing_handler_variable_fails_init_with_a_clear_error(monkeypatch):
    monkeypatch.delenv("LIFECYCLE_PROBE_HANDLER", raising=False)
    monkeypatch.setenv("LIFECYCLE_PROBE_EXPORTER", "none")
    with pytest.raises(RuntimeError, match="LIFECYCLE_PROBE_HANDLER is not set"):
        load_entry_point()
    sys.modules.pop("lifecycle_probe.handler", None)


# -- a failed INIT reaches the runtime as it would without the probe -------------------------
# The runtime here is awslambdaric's own bootstrap, in this process: its _get_handler is what
# the runtime calls at INIT, and its make_error/build_fault_result what it posts to Lambda.


class FailureSink(Sink):
    """Keeps the failed INITs handed to it."""

    name = "failures"

    def __init__(self):
        self.failures = []

    def export(self, record):
        return None

    def export_init_failure(self, failure, timeout_s):
        self.failures.append((failure, timeout_s))


@pytest.fixture
def failures(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_PROBE_EXPORTER", "none")
    fresh_environment()
    sink = FailureSink()
    add_process_sink(sink)
    yield sink.failures
    remove_process_sink(sink)


def runtime_error(handler):
    """What awslambdaric posts to /runtime/init/error when resolving ``handler`` fails (the
    except clauses of bootstrap.run), or None when it resolves."""
    from awslambdaric import bootstrap

    try:
        bootstrap._get_handler(handler)
    except bootstrap.FaultException as fault:
        return bootstrap.make_error(fault.msg, fault.exception_type, fault.trace)
    except Exception:
        return bootstrap.build_fault_result(sys.exc_info(), None)
    return None


def errors_without_and_with_the_probe(monkeypatch, handler, watch=None):
    """The runtime's error for ``handler`` without the probe, then under the zero-code
    entry point, which starts the import tracer as in a new runtime process (the tracer of
    this test process is taken out first). ``watch`` is a module the probe's ``install()``
    gives a post-import hook, as it does the client libraries."""
    stop_import_tracing()
    reset_installation()
    # and the post-import hooks earlier tests left (a failed import keeps its watch): as
    # in a new runtime process, the import machinery is the interpreter's own until the
    # entry point is imported. They are watched again after both runs.
    waiting = {name: list(callbacks) for name, callbacks in imports._callbacks.items()}
    remove_post_import_hooks()
    assert not hasattr(sys.modules["_frozen_importlib"]._find_and_load, "__wrapped__")
    try:
        loaded = set(sys.modules)
        try:
            without = runtime_error(handler)
        finally:
            for name in set(sys.modules) - loaded:  # the second run imports afresh, too
                del sys.modules[name]
        if watch is not None:
            install = installation.install

            def install_and_watch(**options):
                installed = install(**options)
                when_imported(watch, lambda module: None)
                return installed

            monkeypatch.setattr(installation, "install", install_and_watch)
        monkeypatch.setenv("LIFECYCLE_PROBE_HANDLER", handler)
        sys.modules.pop("lifecycle_probe.handler", None)
        with_probe = runtime_error("lifecycle_probe.handler.handler")
    finally:
        for name, callbacks in waiting.items():
            for callback in callbacks:
                when_imported(name, callback)
    return without, with_probe


SLOW_IMPORT = "import zc_fn_slow\n"
FAILING_MODULES = {
    "missing dependency": (
        {"fn_app": SLOW_IMPORT + "import zc_fn_not_packaged\n"},
        "Runtime.ImportModuleError",
    ),
    "syntax error": ({"fn_app": SLOW_IMPORT + "def handler(event, context)\n"}, None),
    "exception at INIT": (
        {
            "fn_app": SLOW_IMPORT
            + "def connect():\n    raise KeyError('postgresql://u:pw-in-line@h/db')\n"
            + "POOL = connect()\n"
        },
        "KeyError",
    ),
    "exception in a nested import": (
        {"fn_app": SLOW_IMPORT + "import fn_lib\n", "fn_lib": "raise OSError('lib')\n"},
        "OSError",
    ),
    "exception in a module the function imports with import_module": (
        {
            "fn_app": "import importlib\nimportlib.import_module('fn_lib')\n",
            "fn_lib": "import fn_lib_deeper\n",
            "fn_lib_deeper": "{}['missing']\n",
        },
        "KeyError",
    ),
    "exception in a module the probe watches (post-import hook)": (
        {"fn_app": "import fn_watched\n", "fn_watched": "raise ValueError('watched')\n"},
        "ValueError",
    ),
    "missing handler": ({"fn_app": SLOW_IMPORT + "def handle(event, context): pass\n"}, None),
    "SystemExit is an exception of the runtime's too": (
        {"fn_app": "import sys\nsys.exit(3)\n"},
        "SystemExit",
    ),
}


@pytest.mark.parametrize("name", list(FAILING_MODULES))
def test_a_failing_init_gives_the_runtime_the_same_error(user_module, monkeypatch, failures, name):
    modules, error_type = FAILING_MODULES[name]
    user_module("zc_fn_slow", "import time\ntime.sleep(0.002)\n")
    for module, body in modules.items():
        user_module(module, body)
    if name.startswith("SystemExit"):
        # not an Exception: the runtime lets it end the process; the probe passes it on
        sys.modules.pop("lifecycle_probe.handler", None)
        monkeypatch.setenv("LIFECYCLE_PROBE_HANDLER", "fn_app.handler")
        with pytest.raises(SystemExit) as raised:
            runtime_error("lifecycle_probe.handler.handler")
        assert raised.value.code == 3
        assert [f.error_type for f, _ in failures] == ["SystemExit"]
        return
    without, with_probe = errors_without_and_with_the_probe(
        monkeypatch, "fn_app.handler", watch="fn_watched"
    )
    assert without is not None
    assert with_probe == without
    # (the watch was in place during the run with the probe: a failed import keeps it)
    assert "fn_watched" in imports._callbacks
    assert not [frame for frame in with_probe["stackTrace"] if "lifecycle_probe" in frame]
    # and the failure went to the sinks, once, with the Lambda error type
    ((failure, timeout_s),) = failures
    assert failure.error_type == (error_type or without["errorType"])
    assert failure.handler == "fn_app.handler"
    assert timeout_s == pytest.approx(2.0, abs=0.1)  # the default flush timeout
    assert "pw-in-line" not in repr(failure)


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [
        ("zc_fn_no_such_module.handler", "Runtime.ImportModuleError"),
        ("sys.handler", "Runtime.BuiltInModuleConflict"),
        ("zc_fn_no_dot", "Runtime.MalformedHandlerName"),
    ],
)
def test_a_bad_handler_setting_gives_the_runtimes_own_fault(
    monkeypatch, failures, handler, error_type
):
    without, with_probe = errors_without_and_with_the_probe(monkeypatch, handler)
    assert without["errorType"] == error_type
    assert with_probe == without
    assert [f.error_type for f, _ in failures] == [error_type]


def test_the_failed_init_record_has_the_imports_before_the_failure(
    user_module, monkeypatch, failures
):
    environment = current_environment()
    user_module("zc_fn_slow", "import time\ntime.sleep(0.002)\n")
    user_module("fn_app", "import zc_fn_slow\nraise RuntimeError('token=abc')\n")
    errors_without_and_with_the_probe(monkeypatch, "fn_app.handler")
    ((failure, _),) = failures
    assert failure.environment_id == environment.environment_id
    assert failure.init_type == "on-demand"
    assert failure.start_ns == environment.init_start_ns
    assert failure.start_source == "process"
    assert failure.start_ns < failure.end_ns <= time.time_ns()
    assert failure.error_type == "RuntimeError"
    assert failure.function == environment.function
    assert failure.pid == os.getpid()
    imported = {record.module: record for record in failure.imports}
    assert imported["zc_fn_slow"].error_type is None
    assert imported["zc_fn_slow"].end_ns - imported["zc_fn_slow"].start_ns >= 2_000_000
    assert imported["fn_app"].error_type == "RuntimeError"
    # the probe's own modules are not the function's INIT imports
    assert not [m for m in imported if m.startswith("lifecycle_probe")]
    assert "token=abc" not in repr(failure)


def test_a_handler_in_a_packages_failing_init_keeps_the_functions_frames(
    tmp_path, monkeypatch, failures
):
    # The handler's own package raising in its __init__: the runtime's traceback has four
    # importlib frames for the package import the probe cannot reproduce (the import
    # tracer imports the package first); the function's frames are the same.
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fn_pkg").mkdir()
    (tmp_path / "fn_pkg" / "__init__.py").write_text("raise OSError('pkg')\n")
    (tmp_path / "fn_pkg" / "app.py").write_text("def handler(event, context): pass\n")
    try:
        without, with_probe = errors_without_and_with_the_probe(monkeypatch, "fn_pkg/app.handler")
    finally:
        sys.modules.pop("fn_pkg", None)
    assert with_probe["errorType"] == without["errorType"] == "OSError"
    assert with_probe["errorMessage"] == without["errorMessage"]
    assert with_probe["stackTrace"][-1] == without["stackTrace"][-1]
    assert "fn_pkg/__init__.py" in without["stackTrace"][-1]
    assert not [frame for frame in with_probe["stackTrace"] if "lifecycle_probe" in frame]


def test_a_disabled_probe_exports_nothing_and_fails_init_the_same(
    user_module, monkeypatch, failures
):
    monkeypatch.setenv("LIFECYCLE_PROBE_DISABLED", "1")
    user_module("fn_app", "raise ValueError('x')\n")
    without, with_probe = errors_without_and_with_the_probe(monkeypatch, "fn_app.handler")
    assert with_probe == without
    assert failures == []


def test_the_entry_point_resolves_a_handler_through_the_runtime(user_module, monkeypatch):
    from awslambdaric import bootstrap

    monkeypatch.setenv("LIFECYCLE_PROBE_EXPORTER", "none")
    user_module("fn_ok", "def handler(event, context):\n    return {'echo': event}\n")
    monkeypatch.setenv("LIFECYCLE_PROBE_HANDLER", "fn_ok.handler")
    sys.modules.pop("lifecycle_probe.handler", None)
    handler = bootstrap._get_handler("lifecycle_probe.handler.handler")
    assert handler.__wrapped__ is sys.modules["fn_ok"].handler
    assert handler({"a": 1}, FakeContext()) == {"echo": {"a": 1}}


def test_a_probe_failure_while_exporting_never_changes_the_error(
    user_module, monkeypatch, failures
):
    class Broken(Sink):
        name = "broken"

        def export(self, record):
            return None

        def export_init_failure(self, failure, timeout_s):
            raise RuntimeError("sink broke")

    broken = Broken()
    add_process_sink(broken)
    try:
        user_module("fn_app", "raise ValueError('x')\n")
        without, with_probe = errors_without_and_with_the_probe(monkeypatch, "fn_app.handler")
    finally:
        remove_process_sink(broken)
    assert with_probe == without
    assert len(failures) == 1  # the other sink still got it


# -- the failed INIT in OpenTelemetry ----------------------------------------------------------


def a_failure(**changes):
    environment = fresh_environment()
    now = time.time_ns()
    imports = (
        ImportRecord(
            "fn_app",
            now - 40_000_000,
            now - 1_000_000,
            5_000_000,
            1,
            None,
            "function",
            True,
            "ValueError",
        ),
        ImportRecord(
            "zc_dep", now - 39_000_000, now - 4_000_000, 35_000_000, 2, 1, "function", True
        ),
        ImportRecord("tiny", now - 3_000_000, now - 2_900_000, 100_000, 3, 1, "function", True),
    )
    fields = {
        "environment_id": environment.environment_id,
        "init_type": "provisioned-concurrency",
        "start_ns": now - 50_000_000,
        "end_ns": now,
        "start_source": "exec-wrapper",
        "error_type": "Runtime.ImportModuleError",
        "function": environment.function,
        "handler": "fn_app.handler",
        "imports": imports,
        "imports_traced_from_ns": now - 45_000_000,
        "pid": 4242,
        **changes,
    }
    return InitFailureRecord(**fields)


def test_the_console_writes_a_failed_init_and_the_report_counts_it(tmp_path):
    import io

    from lifecycle_probe.report import summarise
    from lifecycle_probe.sinks.console import ConsoleSink

    # GIVEN a failed INIT, as the zero-code entry hands it to the console sink
    failure = a_failure()
    stream = io.StringIO()
    ConsoleSink(stream).export_init_failure(failure, 1.0)
    # THEN one init line says it failed, with the error's type only
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line == {
        "lifecycle_probe": "init",
        "environment_id": failure.environment_id,
        "init_type": "provisioned-concurrency",
        "start_ns": failure.start_ns,
        "end_ns": failure.end_ns,
        "duration_s": 0.05,
        "start_source": "exec-wrapper",
        "failed": True,
        "error_type": "Runtime.ImportModuleError",
        "handler": "fn_app.handler",
        "function_name": failure.function.function_name,
        "pid": 4242,
    }
    # AND the report reads it as a failed INIT of its environment
    log = tmp_path / "console.log"
    log.write_text(stream.getvalue())
    report = summarise([str(log)])[0].to_json()
    assert report["init_failures"] == 1
    assert report["environments"] == 0  # it never served a request


def test_the_otel_sink_exports_a_failed_init_span_and_metric():
    spans, metrics = InMemorySpanExporter(), InMemoryMetricExporter()
    sink = OtelSink(
        Config.resolve({}, flush="sync"), (), span_exporter=spans, metric_exporter=metrics
    )
    failure = a_failure()
    sink.export_init_failure(failure, 2.0)
    finished = {
        span.name + ":" + str(dict(span.attributes or {}).get("code.namespace")): span
        for span in spans.get_finished_spans()
    }
    init = finished["lambda.init:None"]
    assert init.parent is None
    assert init.status.status_code is StatusCode.ERROR
    assert init.status.description == "Runtime.ImportModuleError"
    assert (init.start_time, init.end_time) == (failure.start_ns, failure.end_ns)
    assert dict(init.attributes or {}) == {
        "lifecycle.environment.id": failure.environment_id,
        "lifecycle.init_type": "provisioned-concurrency",
        "lifecycle.init.start_source": "exec-wrapper",
        "lifecycle.init.failed": True,
        "error.type": "Runtime.ImportModuleError",
        "process.pid": 4242,
        "lifecycle.handler": "fn_app.handler",
        "lifecycle.import.traced_from_s": pytest.approx(0.005),
    }
    # the imports at or above the 1 ms threshold, nested as imported, the failed one failed
    assert set(finished) == {"lambda.init:None", "lambda.import:fn_app", "lambda.import:zc_dep"}
    app, dep = finished["lambda.import:fn_app"], finished["lambda.import:zc_dep"]
    assert app.parent is not None
    assert dep.parent is not None
    assert app.context is not None
    assert init.context is not None
    assert app.parent.span_id == init.context.span_id
    assert dep.parent.span_id == app.context.span_id
    assert app.status.status_code is StatusCode.ERROR
    trace_ids = {span.context.trace_id for span in finished.values() if span.context}
    assert trace_ids == {init.context.trace_id}
    (data,) = metrics.get_finished_metrics()
    (metric,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert (metric.name, metric.unit) == ("faas.init_errors", "{error}")
    assert isinstance(metric.data, Sum)
    assert metric.data.is_monotonic
    (point,) = metric.data.data_points
    assert isinstance(point, NumberDataPoint)
    assert point.value == 1
    assert dict(point.attributes or {}) == {
        "error.type": "Runtime.ImportModuleError",
        "lifecycle.init_type": "provisioned-concurrency",
    }


def test_a_failed_import_quicker_than_the_threshold_still_has_its_error_span():
    spans = InMemorySpanExporter()
    sink = OtelSink(Config.resolve({}, flush="sync"), (), span_exporter=spans, metric_exporter=None)
    # GIVEN a function module that fails at once (0.2 ms: a missing dependency), under
    # the 1 ms threshold, beside a quick import that succeeded
    now = time.time_ns()
    failed = ImportRecord(
        module="fn_app",
        start_ns=now - 300_000,
        end_ns=now - 100_000,
        self_ns=200_000,
        import_id=1,
        parent_id=None,
        origin="function",
        during_init=True,
        error_type="ModuleNotFoundError",
    )
    quick = failed.replace(
        module="tiny", start_ns=now - 900_000, end_ns=now - 800_000, import_id=2, error_type=None
    )
    sink.export_init_failure(a_failure(imports=(quick, failed)), 2.0)
    # THEN the failed import has its span, in error; the quick one that worked has none
    imports = [s for s in spans.get_finished_spans() if s.name == "lambda.import"]
    assert [dict(s.attributes or {})["code.namespace"] for s in imports] == ["fn_app"]
    assert imports[0].status.status_code is StatusCode.ERROR
    assert imports[0].status.description == "ModuleNotFoundError"


def test_the_failed_init_export_is_bounded_when_the_collector_never_answers():
    release = threading.Event()

    class Hanging(InMemorySpanExporter):
        def export(self, spans):
            release.wait(10)
            return super().export(spans)

    sink = OtelSink(
        Config.resolve({}, flush="sync"),
        (),
        span_exporter=Hanging(),
        metric_exporter=InMemoryMetricExporter(),
        isolate_exports=True,
    )
    try:
        started = time.monotonic()
        sink.export_init_failure(a_failure(), 0.3)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        sink.shutdown(1.0)
    assert elapsed < 1.5  # 0.3 s, with room for a busy machine


def test_the_otel_sink_honours_otel_sdk_disabled(monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    spans = InMemorySpanExporter()
    sink = OtelSink(Config.resolve({}, flush="sync"), (), span_exporter=spans)
    sink.export_init_failure(a_failure(), 1.0)
    assert spans.get_finished_spans() == ()


# -- the layer's exec wrapper -------------------------------------------------------------------
# Each run execs a launcher that, as Lambda's runtime bootstrap does, reads the handler from
# _HANDLER: it reports its environment, pid and arguments.

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "layer" / "lifecycle-probe"
OTEL_INSTRUMENT = ROOT / "tests" / "integration" / "zero_code" / "otel_layer" / "otel-instrument"
PROBE_HANDLER = "lifecycle_probe.handler.handler"
SHOWN = (
    "_HANDLER",
    "LIFECYCLE_PROBE_HANDLER",
    "ORIG_HANDLER",
    "_LIFECYCLE_PROBE_INIT_START",
    "PYTHONPATH",
    "SEEN_START",
)
LAUNCHER = f"""
import json, os, sys
shown = {{name: os.environ.get(name) for name in {SHOWN!r}}}
print(json.dumps({{"pid": os.getpid(), "args": sys.argv[1:], **shown}}))
"""


def launched(*wrappers, python_flags=(), cwd=None, **env):
    """What the launcher saw, started behind ``wrappers`` with only ``env`` (and PATH)."""
    command = [*map(str, wrappers), sys.executable, *python_flags, "-c", LAUNCHER, "a b", "c"]
    completed = subprocess.run(
        command,
        # (the OpenTelemetry layer stand-in's python3: this one, which has its packages)
        env={"PATH": os.environ["PATH"], "OTEL_STAND_IN_PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        cwd=cwd,
    )
    return json.loads(completed.stdout)


def script(path, body):
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def test_the_wrapper_moves_the_handler_and_hands_over_its_start():
    before_ns = time.time_ns()
    seen = launched(WRAPPER, _HANDLER="app.handler")
    after_ns = time.time_ns()
    assert seen["_HANDLER"] == PROBE_HANDLER
    assert seen["LIFECYCLE_PROBE_HANDLER"] == "app.handler"
    assert seen["args"] == ["a b", "c"]  # the runtime command, untouched
    # the runtime replaced the wrapper in its process: the hand-over is believed by it only
    start_ns = wrapper_start_ns(seen["_LIFECYCLE_PROBE_INIT_START"], seen["pid"], None, after_ns)
    assert start_ns is not None
    assert before_ns <= start_ns <= after_ns
    assert (
        wrapper_start_ns(seen["_LIFECYCLE_PROBE_INIT_START"], seen["pid"] + 1, None, after_ns)
        is None
    )


@pytest.mark.parametrize("handler", [None, ""])
def test_without_a_handler_the_wrapper_only_execs(handler):
    env = {} if handler is None else {"_HANDLER": handler}
    seen = launched(WRAPPER, **env)
    assert seen["_HANDLER"] == handler
    assert seen["LIFECYCLE_PROBE_HANDLER"] is None
    assert seen["args"] == ["a b", "c"]
    assert seen["_LIFECYCLE_PROBE_INIT_START"].startswith(f"{seen['pid']}:")


def test_an_inherited_start_of_another_process_is_replaced():
    seen = launched(WRAPPER, _HANDLER="app.handler", _LIFECYCLE_PROBE_INIT_START="1:1.5")
    assert seen["_LIFECYCLE_PROBE_INIT_START"].startswith(f"{seen['pid']}:")


def test_the_wrapper_run_twice_changes_nothing_the_second_time(tmp_path):
    # the layer attached twice, or its wrapper chained with itself
    recorder = script(
        tmp_path / "recorder", 'export SEEN_START="$_LIFECYCLE_PROBE_INIT_START"\nexec "$@"\n'
    )
    seen = launched(WRAPPER, recorder, WRAPPER, _HANDLER="app.handler")
    assert seen["_HANDLER"] == PROBE_HANDLER
    assert seen["LIFECYCLE_PROBE_HANDLER"] == "app.handler"
    assert seen["_LIFECYCLE_PROBE_INIT_START"] == seen["SEEN_START"]  # the first run's


def test_the_wrapper_after_the_opentelemetry_layers_wraps_its_entry_point():
    seen = launched(OTEL_INSTRUMENT, WRAPPER, _HANDLER="app.handler")
    assert seen["ORIG_HANDLER"] == "app.handler"
    assert seen["LIFECYCLE_PROBE_HANDLER"] == "otel_wrapper.lambda_handler"
    assert seen["_HANDLER"] == PROBE_HANDLER
    assert seen["args"] == ["a b", "c"]


def test_the_wrapper_before_the_opentelemetry_layers_is_wrapped_by_it():
    seen = launched(WRAPPER, OTEL_INSTRUMENT, _HANDLER="app.handler")
    assert seen["LIFECYCLE_PROBE_HANDLER"] == "app.handler"
    assert seen["ORIG_HANDLER"] == PROBE_HANDLER
    assert seen["_HANDLER"] == "otel_wrapper.lambda_handler"
    assert seen["_LIFECYCLE_PROBE_INIT_START"].startswith(f"{seen['pid']}:")


def test_the_wrapper_twice_around_the_opentelemetry_layers_moves_the_handler_once():
    seen = launched(WRAPPER, OTEL_INSTRUMENT, WRAPPER, _HANDLER="app.handler")
    # runtime -> otel_wrapper -> the probe's entry point -> app (never the entry point twice)
    assert seen["_HANDLER"] == "otel_wrapper.lambda_handler"
    assert seen["ORIG_HANDLER"] == PROBE_HANDLER
    assert seen["LIFECYCLE_PROBE_HANDLER"] == "app.handler"


def test_a_handler_moved_by_a_wrapper_of_another_process_is_moved_again():
    # the marker is the pid of the process that ran the wrapper: a child inheriting the
    # variables is another runtime, whose handler setting is what _HANDLER says
    seen = launched(WRAPPER, _HANDLER="app.handler", _LIFECYCLE_PROBE_WRAPPED="1")
    assert seen["LIFECYCLE_PROBE_HANDLER"] == "app.handler"
    assert seen["_HANDLER"] == PROBE_HANDLER


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on"])
def test_a_disabled_probe_makes_the_wrapper_a_pure_pass_through(value):
    seen = launched(WRAPPER, _HANDLER="app.handler", LIFECYCLE_PROBE_DISABLED=value)
    assert seen["_HANDLER"] == "app.handler"
    assert seen["LIFECYCLE_PROBE_HANDLER"] is None
    assert seen["_LIFECYCLE_PROBE_INIT_START"] is None


def test_the_wrapper_without_a_command_says_how_it_is_used():
    completed = subprocess.run([str(WRAPPER)], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 2
    assert "AWS_LAMBDA_EXEC_WRAPPER" in completed.stderr


@pytest.fixture
def layer(tmp_path):
    """A built layer's shape: the wrapper at its root, the probe under python/."""
    root = tmp_path / "opt"
    (root / "python").mkdir(parents=True)
    shutil.copy(WRAPPER, root / "lifecycle-probe")
    (root / "python" / "lifecycle_probe").symlink_to(ROOT / "src" / "lifecycle_probe")
    return root


def probe_location(*wrappers, **env):
    # -S: no site-packages, so lifecycle_probe can come from PYTHONPATH only
    command = [*map(str, wrappers), sys.executable, "-S", "-c"]
    command.append(
        "import json, os, lifecycle_probe\n"
        "print(json.dumps([lifecycle_probe.__file__, os.environ['PYTHONPATH']]))"
    )
    completed = subprocess.run(
        command,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(completed.stdout)


def test_the_wrapper_makes_the_layers_probe_importable(layer):
    location, python_path = probe_location(layer / "lifecycle-probe", _HANDLER="app.handler")
    assert location == str(layer / "python" / "lifecycle_probe" / "__init__.py")
    assert python_path == str(layer / "python")


def test_a_copy_bundled_with_the_function_wins(layer, tmp_path):
    task = tmp_path / "task"
    (task / "lifecycle_probe").mkdir(parents=True)
    (task / "lifecycle_probe" / "__init__.py").write_text("")
    wrapper = layer / "lifecycle-probe"
    location, python_path = probe_location(wrapper, wrapper, PYTHONPATH=str(task))
    assert location == str(task / "lifecycle_probe" / "__init__.py")
    # appended after the function's paths, once however often the wrapper ran
    assert python_path == f"{task}:{layer / 'python'}"


def test_the_wrapper_run_by_a_relative_path_puts_an_absolute_one(layer):
    seen = launched("./lifecycle-probe", cwd=layer, _HANDLER="app.handler")
    assert seen["PYTHONPATH"] == str(layer / "python")


def test_a_probe_failure_while_cutting_the_traceback_still_passes_the_error_on(
    user_module, monkeypatch, failures
):
    from lifecycle_probe import init_failure

    def broken(exc, runtime):
        raise RuntimeError("probe bug")

    monkeypatch.setattr(init_failure, "_runtime_traceback", broken)
    user_module("fn_app", "raise ValueError('x')\n")
    without, with_probe = errors_without_and_with_the_probe(monkeypatch, "fn_app.handler")
    # the function's own error, only with the frames the probe could not take out
    assert (with_probe["errorType"], with_probe["errorMessage"]) == ("ValueError", "x")
    assert with_probe["stackTrace"][-1] == without["stackTrace"][-1]


# -- a runtime before awslambdaric 2.1.0: _get_handler returns a fault handler ----------------

OLD_RUNTIME = """
import importlib


class FaultException(Exception):
    IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
    HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"

    def __init__(self, exception_type, msg, trace=None):
        self.msg = msg
        self.exception_type = exception_type
        self.trace = trace


def make_fault_handler(fault):
    def result(*args):
        raise fault

    return result


def _get_handler(handler):
    modname, fname = handler.rsplit(".", 1)
    try:
        m = importlib.import_module(modname)
    except ImportError as e:
        fault = FaultException(
            FaultException.IMPORT_MODULE_ERROR,
            "Unable to import module '{}': {}".format(modname, str(e)),
        )
        return make_fault_handler(fault)
    try:
        return getattr(m, fname)
    except AttributeError:
        fault = FaultException(
            FaultException.HANDLER_NOT_FOUND,
            "Handler '{}' missing on module '{}'".format(fname, modname),
        )
        return make_fault_handler(fault)
"""


def fault_of(handler):
    runtime = sys.modules["zc_old_runtime"]
    with pytest.raises(runtime.FaultException) as raised:
        handler({}, FakeContext())
    return type(raised.value).__name__, raised.value.exception_type, raised.value.msg


@pytest.mark.parametrize(
    ("app", "error_type"),
    [
        ("import zc_fn_slow\nimport zc_fn_not_packaged\n", "Runtime.ImportModuleError"),
        ("import zc_fn_slow\ndef handle(event, context): pass\n", "Runtime.HandlerNotFound"),
    ],
)
def test_an_old_runtimes_fault_handler_is_a_failed_init(
    user_module, monkeypatch, failures, app, error_type
):
    # GIVEN a runtime whose _get_handler returns a handler raising the fault at each
    # invocation, instead of raising it at INIT
    user_module("zc_fn_slow", "import time\ntime.sleep(0.002)\n")
    user_module("zc_old_runtime", OLD_RUNTIME)
    user_module("fn_app", app)
    runtime = importlib.import_module("zc_old_runtime")
    without = runtime._get_handler("fn_app.handler")
    sys.modules.pop("fn_app", None)
    # WHEN it resolves the zero-code entry point
    monkeypatch.setenv("LIFECYCLE_PROBE_HANDLER", "fn_app.handler")
    sys.modules.pop("lifecycle_probe.handler", None)
    with capture_records() as captured:
        entry = runtime._get_handler("lifecycle_probe.handler.handler")
        # THEN the runtime keeps its own behaviour: its fault handler, raising the fault
        assert entry.__code__ is without.__code__
        assert fault_of(entry) == fault_of(without) == ("FaultException", error_type, ANY)
        assert fault_of(entry)[2] == fault_of(without)[2]
    # and the failed INIT is exported, at INIT, once, with the runtime's error type
    assert [f.error_type for f, _ in failures] == [error_type]
    assert "zc_fn_slow" in [i.module for i in failures[0][0].imports]
    # no invocation of a function that never loaded is recorded as the probe's
    assert captured.starts == []
