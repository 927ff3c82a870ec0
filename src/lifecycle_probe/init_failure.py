"""The zero-code entry's INIT: the function's handler resolved as the runtime would, and a
failed INIT reported to Lambda exactly as without the probe, and to the sinks.

Under ``_HANDLER=lifecycle_probe.handler.handler`` the runtime imports the probe's module,
which imports the function's. Left alone, every INIT failure would then be about the
probe's module: ``Unable to import module 'lifecycle_probe.handler'``, an
``AttributeError`` instead of ``Runtime.HandlerNotFound``, a stack trace full of the
probe's and the import tracer's frames. So:

- the function's handler is resolved by the runtime's own ``_get_handler`` (the one now
  importing the probe's module), which raises the runtime's own fault for a malformed
  handler name, a built-in module name, an import error, a syntax error or a missing
  handler: the same type, message and trace as without the probe, whatever version of the
  runtime it is. An unknown runtime gets a plain import and ``getattr``;
- an exception raised by the function's INIT code keeps its own object and message; its
  traceback is cut to start at the function's first frame, without the probe's frames in
  between, so that the runtime, which walks it from its own ``_get_handler`` down, sees
  the very frames it would have seen without the probe (see :func:`runtime_traceback`);
- before the error goes on to the runtime, which reports it and exits, the failed INIT is
  exported to the configured sinks, bounded by the flush timeout.
"""

from __future__ import annotations

import os
import sys
import time

from lifecycle_probe._safe import report_failure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType, TracebackType
    from typing import Any

    from lifecycle_probe.rare_records import InitFailureRecord

__all__ = [
    "at_interpreter_startup",
    "defer_init_failure",
    "export_init_failure",
    "find_runtime",
    "imported_by_runtime",
    "init_resolved",
    "load_handler",
    "returned_fault",
    "runtime_traceback",
]

# Frames of the probe's own files (the import tracer, this module, the entry point).
_PROBE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# How far up the stack the runtime's handler resolution may be: the runtime's
# ``_get_handler`` imports the entry point (a handful of importlib frames), perhaps through
# another wrapper's module (the OpenTelemetry layer's otel_wrapper), which imports it too.
_MAX_DEPTH = 64

_PROBE, _IMPORTLIB, _OTHER = 0, 1, 2


def find_runtime(frame: FrameType | None = None) -> dict[str, Any] | None:
    """The module globals of the runtime whose ``_get_handler`` is importing the entry
    point (awslambdaric's ``bootstrap``, or a managed runtime's), or None.

    It is recognised by what the probe reuses of it: a ``_get_handler(handler)`` function
    whose code is running in that frame, and a ``FaultException`` class. Anything else is
    an unknown runtime: the handler is then imported plainly and its errors re-raised.
    """
    try:
        return _find_runtime(sys._getframe(1) if frame is None else frame)
    except Exception as exc:  # an unknown runtime: the plain import
        report_failure("runtime lookup", exc)
        return None


def _find_runtime(frame: FrameType | None) -> dict[str, Any] | None:
    depth = 0
    while frame is not None and depth < _MAX_DEPTH:
        code = frame.f_code
        if code.co_name == "_get_handler":
            namespace = frame.f_globals
            resolve = namespace.get("_get_handler")
            if (
                getattr(resolve, "__code__", None) is code
                and code.co_argcount == 1
                and isinstance(namespace.get("FaultException"), type)
            ):
                return namespace
        frame = frame.f_back
        depth += 1
    return None


def imported_by_runtime(runtime: dict[str, Any] | None, frame: FrameType | None = None) -> bool:
    """Whether the runtime's ``_get_handler`` imports the entry point itself: between the
    two there is only the import machinery (and the probe's import tracer).

    Not so when another layer's module imports it (the OpenTelemetry layer's otel_wrapper,
    with ``ORIG_HANDLER`` pointing at the entry point): the runtime resolves that module,
    which imports the function's with ``import_module`` and ``getattr``. The entry point
    then does the same, so that the error reaching the runtime is the one it would get
    from that module without the probe.
    """
    try:
        resolve = None if runtime is None else runtime.get("_get_handler")
        code = getattr(resolve, "__code__", None)
        if code is None:
            return False
        frame = sys._getframe(1) if frame is None else frame
        depth = 0
        while frame is not None and depth < _MAX_DEPTH:
            if frame.f_code is code:
                return True
            if depth and _frame_kind(frame) == _OTHER:
                return False  # another module's code in between
            frame = frame.f_back
            depth += 1
    except Exception as exc:
        report_failure("runtime lookup", exc)
    return False


def at_interpreter_startup(frame: FrameType | None = None) -> bool:
    """Whether this runs while the interpreter starts, before its program: the outermost
    frame (past the import machinery) is the ``site`` module's. A ``sitecustomize`` or
    ``.pth`` file imports the entry point, as OpenTelemetry's ``opentelemetry-instrument``
    does through its AwsLambdaInstrumentor, which imports the module named by
    ``ORIG_HANDLER``.

    The runtime starts after it and resolves the handler itself: a failure now is not yet
    the failed INIT (it may even pass the second time).
    """
    try:
        frames: list[FrameType] = []
        current: FrameType | None = sys._getframe(1) if frame is None else frame
        while current is not None:
            frames.append(current)
            current = current.f_back
        # outermost first, past the import machinery that imports ``site`` itself
        outermost = next((f for f in reversed(frames) if _frame_kind(f) != _IMPORTLIB), None)
        return outermost is not None and outermost.f_globals.get("__name__") == "site"
    except Exception as exc:
        report_failure("startup lookup", exc)
        return False


def load_handler(
    spec: str | None, runtime: dict[str, Any] | None, by_runtime: bool = True
) -> Callable[..., Any]:
    """The function's handler named by ``spec`` (``module.function``, ``dir/module.function``).

    With a known runtime that imports the entry point itself (``by_runtime``), resolved by
    the runtime's own ``_get_handler``: its errors are exactly the ones Lambda would report
    without the probe. Otherwise a plain ``import_module`` and ``getattr``, as another
    wrapper's module importing the function's would do.
    """
    if not spec:
        # Only a hand-made configuration gets here (the exec wrapper always hands the
        # function's _HANDLER over): fail INIT with a clear error.
        raise RuntimeError(
            "LIFECYCLE_PROBE_HANDLER is not set to 'module.function'; the exec wrapper "
            f"sets it from _HANDLER (got {spec!r})"
        )
    if runtime is not None and by_runtime:
        resolved: Callable[..., Any] = runtime["_get_handler"](spec)
        return resolved
    from importlib import import_module

    module_name, _, function_name = spec.rpartition(".")
    function: Callable[..., Any] = getattr(
        import_module(module_name.replace("/", ".")), function_name
    )
    return function


def error_type_of(exc: BaseException, runtime: dict[str, Any] | None) -> str:
    """The Lambda error type of a runtime fault, else the exception's qualified name.

    With a known runtime, an ``ImportError`` or ``SyntaxError`` of a plain import (the
    entry point imported by another wrapper's module) is the fault the runtime's
    ``_get_handler`` will make of it when it reaches the runtime through that module.
    """
    fault = None if runtime is None else runtime.get("FaultException")
    if fault is not None and isinstance(exc, fault):
        exception_type = getattr(exc, "exception_type", None)
        if isinstance(exception_type, str) and exception_type:
            return exception_type
    if fault is not None:
        wrapped_as = (
            "IMPORT_MODULE_ERROR"
            if isinstance(exc, ImportError)
            else "USER_CODE_SYNTAX_ERROR"
            if isinstance(exc, SyntaxError)
            else None
        )
        exception_type = None if wrapped_as is None else getattr(fault, wrapped_as, None)
        if isinstance(exception_type, str) and exception_type:
            return exception_type
    return type(exc).__qualname__


def returned_fault(resolved: object, runtime: dict[str, Any] | None) -> BaseException | None:
    """The fault of a fault handler the runtime's ``_get_handler`` returned, or None.

    Runtimes before awslambdaric 2.1.0 do not raise a bad handler's fault at INIT: they
    return a handler of their own that raises it at every invocation (``make_fault_handler``).
    It is recognised as a function of the runtime's module whose closure holds an instance
    of the runtime's ``FaultException``.
    """
    try:
        fault = None if runtime is None else runtime.get("FaultException")
        if not isinstance(fault, type) or getattr(resolved, "__globals__", None) is not runtime:
            return None
        for cell in getattr(resolved, "__closure__", None) or ():
            content = cell.cell_contents
            if isinstance(content, fault) and isinstance(content, BaseException):
                return content
    except Exception as exc:  # (an empty cell raises ValueError)
        report_failure("fault handler lookup", exc)
    return None


# -- the traceback the runtime would have seen ------------------------------------------------


def _kind(entry: TracebackType) -> int:
    return _frame_kind(entry.tb_frame)


def _frame_kind(frame: FrameType) -> int:
    filename = frame.f_code.co_filename
    if filename.startswith(_PROBE_DIR):
        return _PROBE
    if filename.startswith("<frozen importlib") or _is_importlib_file(filename):
        return _IMPORTLIB
    return _OTHER


def _is_importlib_file(filename: str) -> bool:
    head, _, name = filename.rpartition(os.sep)
    return head.endswith(os.sep + "importlib") and name in (
        "__init__.py",
        "_bootstrap.py",
        "_bootstrap_external.py",
    )


def runtime_traceback(
    exc: BaseException, runtime: dict[str, Any] | None = None
) -> TracebackType | None:
    """``exc``'s traceback from the function's first frame on, without the probe's frames.

    Without the probe, the runtime's ``_get_handler`` imports the function's module, and
    the traceback it reports runs: its own frames, importlib's ``import_module`` and the
    import machinery's frames, then the function's. With the probe, the same runtime
    frames and import machinery lead to the entry point's module, which re-raises the
    exception with the traceback returned here (with a bare ``raise``, which adds no frame
    of its own): so the function's frames follow the same machinery frames as before.

    Further down, the import hook's frames (the tracer's, a watched module's) sit in
    the function's own nested imports: they are dropped, and with them a run of the
    import machinery's frames that the interpreter would have cut from an ``import``
    statement's traceback had the probe's frame not split it in two (the interpreter
    removes a run of importlib frames only when it ends in ``_call_with_frames_removed``).

    Returns the traceback unchanged when it holds no frame of the function (the probe's
    own error, or a fault the runtime raised), or should this go wrong.
    """
    try:
        return _runtime_traceback(exc, runtime)
    except Exception as failure:
        report_failure("INIT error traceback", failure)
        return exc.__traceback__


def _runtime_traceback(exc: BaseException, runtime: dict[str, Any] | None) -> TracebackType | None:
    entries: list[TracebackType] = []
    entry = exc.__traceback__
    while entry is not None:
        entries.append(entry)
        entry = entry.tb_next
    # The runtime's _get_handler called by the entry point is the probe's doing: its frame
    # goes with the probe's (the runtime's own call is above the entry point's module).
    resolve = None if runtime is None else runtime.get("_get_handler")
    runtime_code = getattr(resolve, "__code__", None)
    kinds = [
        _PROBE if runtime_code is not None and e.tb_frame.f_code is runtime_code else _kind(e)
        for e in entries
    ]
    start = next((i for i, kind in enumerate(kinds) if kind == _OTHER), None)
    if start is None:
        return exc.__traceback__
    kept: list[TracebackType] = []
    index = start
    count = len(entries)
    while index < count:
        kind = kinds[index]
        if kind == _PROBE:
            index += 1
            continue
        if kind == _IMPORTLIB:
            end = index
            while end < count and kinds[end] == _IMPORTLIB:
                end += 1
            after = end
            while after < count and kinds[after] == _PROBE:
                after += 1
            # Importlib frames, then the probe's, then the function's again: without the
            # probe's frame in between, the interpreter would have cut the whole run.
            split_run = after > end and after < count and kinds[after] == _OTHER
            if not split_run:
                kept.extend(entries[index:end])
            index = end
            continue
        kept.append(entries[index])
        index += 1
    # (no itertools.pairwise: the module is no import of a bare interpreter)
    for position in range(len(kept) - 1):
        kept[position].tb_next = kept[position + 1]
    kept[-1].tb_next = None
    return kept[0]


# -- telemetry of the failed INIT ------------------------------------------------------------


def failure_record(
    exc: BaseException, spec: str | None, runtime: dict[str, Any] | None
) -> InitFailureRecord:
    """The record of the failed INIT: timing, error type (never the message), imports."""
    from lifecycle_probe.environment import current_environment
    from lifecycle_probe.imports import active_tracer
    from lifecycle_probe.probe_threads import probe_work

    with probe_work():  # (the record's module is loaded now: the probe's import)
        from lifecycle_probe.rare_records import InitFailureRecord

    end_ns = time.time_ns()
    environment = current_environment()
    start_ns = environment.init_start_ns
    tracer = active_tracer()
    imports: tuple[Any, ...] = ()
    traced_from_ns = None
    if tracer is not None:
        # As for a successful INIT: imports from before this environment's INIT began (a
        # forked parent's) are not this INIT's.
        imports = tuple(r for r in tracer.take_init() if r.start_ns >= start_ns)
        traced_from_ns = max(tracer.started_ns, start_ns)
    return InitFailureRecord(
        environment_id=environment.environment_id,
        init_type=environment.init_type,
        start_ns=start_ns,
        end_ns=end_ns,
        start_source=environment.init_start_source,
        error_type=error_type_of(exc, runtime),
        function=environment.function,
        handler=spec,
        imports=imports,
        imports_traced_from_ns=traced_from_ns,
        pid=environment.pid,
    )


# The environment whose failed INIT was exported: at most once per environment (process).
# The OpenTelemetry layer imports the entry point twice when it wraps it (at interpreter
# startup, then through its otel_wrapper): a failing INIT fails both times.
_exported_for: str | None = None
# A failure at interpreter startup, not exported yet: (exception, handler setting,
# runtime, environment id). The runtime's own attempt, later, decides.
_pending: tuple[BaseException, str | None, dict[str, Any] | None, str] | None = None
_exit_export_registered = False


def export_init_failure(
    exc: BaseException, spec: str | None, runtime: dict[str, Any] | None
) -> None:
    """Export the failed INIT to the configured sinks, within the flush timeout; never raises.

    Done before the error goes back to the runtime: it reports the error and exits at
    once, and Lambda may end the environment right after. Once per environment: a second
    failure of the same INIT (the entry point imported again) exports nothing.
    """
    global _exported_for, _pending
    try:
        from lifecycle_probe.environment import current_environment

        environment_id = current_environment().environment_id
        _pending = None
        if _exported_for == environment_id:
            return
        _exported_for = environment_id
        _export(exc, spec, runtime)
    except Exception as failure_to_export:
        report_failure("failed INIT export", failure_to_export)


def defer_init_failure(
    exc: BaseException, spec: str | None, runtime: dict[str, Any] | None
) -> None:
    """Keep a failure at interpreter startup for later; never raises.

    The runtime imports the entry point again when it resolves the handler: if that fails
    too, it is exported then, with the runtime's error type; if it succeeds, INIT did not
    fail. Should the process exit with no second attempt, it is exported at exit.
    """
    global _pending, _exit_export_registered
    try:
        import atexit

        from lifecycle_probe.environment import current_environment

        _pending = (exc, spec, runtime, current_environment().environment_id)
        if not _exit_export_registered:
            _exit_export_registered = True
            atexit.register(_export_pending)
    except Exception as failure_to_defer:
        report_failure("failed INIT export", failure_to_defer)


def init_resolved() -> None:
    """The entry point resolved the function's handler: a failure kept from interpreter
    startup was not the failed INIT."""
    global _pending
    _pending = None


def _export_pending() -> None:
    pending = _pending
    if pending is None:
        return
    exc, spec, runtime, environment_id = pending
    from lifecycle_probe.environment import current_environment

    if current_environment().environment_id == environment_id:
        export_init_failure(exc, spec, runtime)


def _export(exc: BaseException, spec: str | None, runtime: dict[str, Any] | None) -> None:
    from lifecycle_probe.config import Config
    from lifecycle_probe.installation import installed_options
    from lifecycle_probe.probe_threads import probe_work

    config = Config.resolve(**installed_options())
    if config.disabled:
        return
    # The record first: the imports of INIT end here, before the sinks' own.
    failure = failure_record(exc, spec, runtime)
    with probe_work():  # the sinks' imports (the OpenTelemetry SDK) are the probe's
        from lifecycle_probe.sinks import build_sinks, export_init_failure_to

        # No after-response extension for a process about to exit: every sink
        # delivers now.
        sinks = build_sinks(config.replace(flush="sync"))
        export_init_failure_to(sinks, failure, config.flush_timeout_ms / 1000)
