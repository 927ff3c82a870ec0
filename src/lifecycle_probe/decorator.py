"""``@probe``: one invocation record per call, handed to the sinks; the handler untouched.

The wrapper does as little as it can on the way in (a clock read, a counter, a small
tuple) and hands the finished record to the sinks on the way out. Whatever the probe
does wrong is reported and skipped: the handler's result and exceptions pass through as
the very same objects.
"""

from __future__ import annotations

import time
from _queue import Empty, SimpleQueue
from os import environ

from lifecycle_probe._safe import report_failure
from lifecycle_probe.config import Config
from lifecycle_probe.environment import current_environment
from lifecycle_probe.extension import active_extension
from lifecycle_probe.facts import in_flight
from lifecycle_probe.imports import active_tracer, probe_work
from lifecycle_probe.installation import (
    coordinate_powertools_cold_start,
    install_connection_hooks,
    install_runtime_signals,
    installed_options,
)
from lifecycle_probe.leaks import LeakWatch, task_root_of
from lifecycle_probe.records import ERROR, OK, RESTORED, TIMEOUT, InvocationRecord
from lifecycle_probe.resources import configure as configure_resources
from lifecycle_probe.resources import measure as measure_resources
from lifecycle_probe.sinks import build_sinks, export_to, process_sinks
from lifecycle_probe.sinks.flush import before_drains
from lifecycle_probe.triggers import OTHER as OTHER_TRIGGER
from lifecycle_probe.triggers import trigger_of, w3c_context_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from contextvars import Token
    from typing import Any, TypeVar

    from lifecycle_probe.environment import Environment
    from lifecycle_probe.extension import InternalExtension
    from lifecycle_probe.records import InitRecord, LifecycleFacts
    from lifecycle_probe.sinks import Sink

    Handler = TypeVar("Handler", bound=Callable[..., Any])
    Incoming = tuple[str, str | None, str | None, str | None]
    # What begin() hands to finish(): environment, facts, INIT record, context token,
    # the Lambda context, what the sinks need of the event, and the event itself (for the
    # leak search; never exported).
    Started = tuple[
        Environment,
        LifecycleFacts,
        InitRecord | None,
        Token[LifecycleFacts | None],
        Any,
        Incoming | None,
        Any,
    ]


# Set on every wrapper the probe makes, so that a probed handler is never probed twice
# (the zero-code entry point wrapping a handler that already carries ``@probe``).
PROBED_MARK = "__lifecycle_probe__"


def probe(handler: Handler | None = None, /, **options: Any) -> Any:
    """Decorate a Lambda handler ``(event, context)``; usable bare or with options.

    ``@probe`` or ``@probe(exporter="console", proactive_init_gap_ms=500)``. Options beat
    the options given to ``install()``, which beat ``LIFECYCLE_PROBE_*`` variables, which
    beat defaults. When disabled, the handler itself is returned: a pure pass-through. A
    handler that is already probed is returned as it is.
    """
    if handler is None:

        def decorate(function: Handler) -> Handler:
            return probe(function, **options)  # type: ignore[no-any-return]

        return decorate
    try:
        if getattr(handler, PROBED_MARK, False):
            return handler
        config = Config.resolve(**{**installed_options(), **options})
        if config.disabled:
            return handler
        install_runtime_signals()
        install_connection_hooks(config)
        if "emf" in config.exporter:
            coordinate_powertools_cold_start()
        with probe_work():  # the sinks' modules are the probe's imports, not the function's
            sinks = build_sinks(config)
        extension = active_extension()
        if extension is not None and sinks:
            _report_timeouts_to(extension)
        return _wrap(handler, config, sinks)
    except Exception as exc:
        report_failure("@probe", exc)
        return handler


# A code object's flag for ``async def`` (inspect.CO_COROUTINE; inspect itself costs INIT
# several milliseconds to import).
_CO_COROUTINE = 0x80


_timeouts_reported_to: list[InternalExtension] = []


def _report_timeouts_to(extension: InternalExtension) -> None:
    # Once per extension, however many handlers are probed: report_timeout finds the
    # invocation in flight itself.
    if extension not in _timeouts_reported_to:
        _timeouts_reported_to.append(extension)
        extension.add_timeout_report(report_timeout)


def _wrap(handler: Handler, config: Config, sinks: tuple[Sink, ...]) -> Handler:
    gap_ns = config.proactive_init_gap_ms * 1_000_000
    clock = time.time_ns
    reads_event = any(sink.reads_event for sink in sinks)
    watch = _leak_watch(handler) if sinks and config.globals == "warn" else None
    if sinks:
        configure_resources(config.tmp_warn_share)
    # When every sink flushes after the response through the internal extension, the
    # record itself is built there too (with the leak search): the caller only queues.
    extensions = {id(getattr(sink, "extension", None)) for sink in sinks}
    deferrable = bool(sinks) and id(None) not in extensions and len(extensions) == 1
    extension = getattr(sinks[0], "extension", None) if deferrable else None

    def begin(event: Any, context: Any) -> Started | None:
        """Start the invocation's record; None when the probe must stay out of it."""
        if in_flight.get() is not None:
            return None  # a probed handler called from inside another: one record
        try:
            # What the sinks need of the event, read before the handler can change it,
            # and before anything is marked in flight: reading it may raise.
            if reads_event or process_sinks:
                incoming = _incoming(event)
            elif sinks:
                # Sinks that use nothing of the event (EMF, the log lines) skip parsing it.
                incoming = (OTHER_TRIGGER, _trace_header(), None, None)
            else:
                incoming = None
            environment = current_environment()
            # Only a string is a request id (a test's MagicMock context answers every
            # attribute with a mock), and a context whose attributes raise has none.
            try:
                request_id = context.aws_request_id
            except Exception:
                request_id = None
            if type(request_id) is not str:
                request_id = None
            facts, init = environment.begin_invocation(request_id, gap_ns, clock())
            if incoming is not None:
                environment.in_flight_capture = (facts, init, incoming, context, sinks)
            if init is not None and watch is not None:
                watch.baseline()  # the globals as INIT left them, before the handler runs
            # Last: once set, _finish must run to reset it.
            token = in_flight.set(facts)
        except Exception as exc:
            report_failure("invocation start", exc)
            return None
        return environment, facts, init, token, context, incoming, event

    def finish(started: Started, exc: BaseException | None) -> None:
        environment, facts, init, token, context, incoming, event = started
        try:
            end_ns = time.time_ns()
            if environment is not current_environment():
                # A child process the handler forked, leaving through this wrapper: the
                # invocation is its parent's to end and report, the child is an environment
                # of its own (a second record would repeat the parent's request and INIT).
                in_flight.reset(token)
                return
            unreported = environment.end_invocation(end_ns, facts.invocation_seq)
            in_flight.reset(token)
            if incoming is None:
                return  # ``exporter="none"``: nobody to hand a record to
            if not unreported:
                return  # reported as a timeout just before the deadline; it finished after all
            outcome = OK if exc is None else ERROR
            error_type = None if exc is None else type(exc).__qualname__
            ended: tuple[Any, ...] = (sinks, watch, event, environment, facts, init, context)
            ended += (incoming, end_ns, outcome, error_type, exc)
            if extension is not None and extension.registered and not process_sinks:
                _ended.put(ended)  # built and exported after the response
            else:
                _export(ended)
        except Exception as failure:
            report_failure("invocation end", failure)

    def invocation(event: Any, context: Any) -> Any:
        started = begin(event, context)
        if started is None:
            # Called outside the except block, so that an exception from the handler
            # carries no trace of the probe's own failure in its __context__.
            return handler(event, context)
        try:
            result = handler(event, context)
        except BaseException as exc:
            finish(started, exc)
            raise
        finish(started, None)
        return result

    async def async_invocation(event: Any, context: Any) -> Any:
        # An ``async def`` handler (run by a framework or by the user's own event loop):
        # the invocation lasts until its coroutine finishes, not until it is created.
        started = begin(event, context)
        if started is None:
            return await handler(event, context)
        try:
            result = await handler(event, context)
        except BaseException as exc:
            finish(started, exc)
            raise
        finish(started, None)
        return result

    code = getattr(handler, "__code__", None)
    is_async = code is not None and bool(getattr(code, "co_flags", 0) & _CO_COROUTINE)
    wrapper: Any = async_invocation if is_async else invocation
    wrapper.__name__ = getattr(handler, "__name__", "handler")
    wrapper.__qualname__ = getattr(handler, "__qualname__", wrapper.__name__)
    wrapper.__doc__ = getattr(handler, "__doc__", None)
    wrapper.__module__ = getattr(handler, "__module__", None)
    wrapper.__wrapped__ = handler
    setattr(wrapper, PROBED_MARK, True)
    return wrapper  # type: ignore[no-any-return]


def _string_attribute(context: Any, name: str) -> str | None:
    # Only a string is an ARN (a test's MagicMock context answers every attribute with a
    # mock), and a context whose attributes raise has none.
    try:
        value = getattr(context, name, None)
    except Exception:
        return None
    return value if type(value) is str else None


# The runtime sets _X_AMZN_TRACE_ID for each invocation before calling the handler. Read
# from os.environ's own bytes mapping: ``environ.get`` re-encodes the key on every call and
# raises and catches a KeyError when the variable is absent (~1 us outside Lambda).
_TRACE_VARIABLE = "_X_AMZN_TRACE_ID"
try:
    _environ_bytes: Any = environ._data  # type: ignore[attr-defined]
    _TRACE_KEY: Any = environ.encodekey(_TRACE_VARIABLE)
except AttributeError:  # another Python's os.environ: the public way
    _environ_bytes = None


def _trace_header() -> str | None:
    if _environ_bytes is None:
        return environ.get(_TRACE_VARIABLE)
    value = _environ_bytes.get(_TRACE_KEY)
    # (what os.environ's own decodevalue does, without its Python-level call)
    return None if value is None else value.decode("utf-8", "surrogateescape")


def _incoming(event: Any) -> tuple[str, str | None, str | None, str | None]:
    """The trigger and the incoming trace context (X-Ray, then W3C headers) of an event."""
    try:
        traceparent, tracestate = w3c_context_of(event)
        trigger = trigger_of(event)
    except Exception as exc:
        # An event whose own methods raise (a hostile mapping) costs its trigger and W3C
        # context, never its record.
        report_failure("event reading", exc)
        return OTHER_TRIGGER, _trace_header(), None, None
    return trigger, _trace_header(), traceparent, tracestate


def _deadline_ns(context: Any, now_ns: int) -> int | None:
    # awslambdaric's context keeps the deadline itself: read it rather than ask for the
    # remaining time (a clock read and arithmetic, then our own back to a deadline).
    try:
        deadline_ms = getattr(context, "_epoch_deadline_time_in_ms", None)
        if type(deadline_ms) is int:
            return deadline_ms * 1_000_000
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return None
        left_ms = remaining()
    except Exception:  # a test's half-built or hostile context: no deadline
        return None
    # Only a number is a remaining time (a MagicMock's answer would make int() say 1 ms).
    if type(left_ms) not in (int, float) or not 0 <= left_ms < 10**9:
        return None
    return now_ns + int(left_ms * 1_000_000)


# Invocations that ended while the internal extension flushes after the response: their
# records are built and exported there (_export_ended), before the sinks drain.
_ended: SimpleQueue[tuple[Any, ...]] = SimpleQueue()


def _export_ended() -> None:
    while True:
        try:
            ended = _ended.get_nowait()
        except Empty:
            return
        if ended[3] is not current_environment():
            continue  # queued by the parent of this forked process: the parent's to export
        try:
            _export(ended)
        except Exception as failure:
            report_failure("invocation end", failure)


before_drains.append(_export_ended)


def _export(ended: tuple[Any, ...]) -> None:
    """Build the record of an ended invocation, with its leaks, and hand it to the sinks."""
    sinks, watch, event, environment, facts, init, context, incoming, *outcome = ended
    if watch is not None:
        _note_leaks(watch, event, environment, facts)
    if facts.start == RESTORED:
        # The first invocation after a SnapStart restore: what the snapshot shares.
        from lifecycle_probe.snapstart import report as report_hazards

        report_hazards(environment, facts)
    export_to(sinks, _record(environment, facts, init, context, incoming, *outcome))


def _note_leaks(watch: LeakWatch, event: Any, environment: Environment, facts: Any) -> None:
    try:
        leaked = watch.after_invocation(event, facts.invocation_seq, facts.environment_id)
    except Exception as exc:
        report_failure("leak search", exc)
        return
    if not leaked:
        return
    from lifecycle_probe.loglines import GLOBAL_LEAK, WARNING, write_line
    from lifecycle_probe.records import LEAK_EVENT, LifecycleEvent

    now_ns = time.time_ns()
    for module, name in leaked:
        attributes = (
            ("code.namespace", module),
            ("lifecycle.global.name", name),
            ("lifecycle.global.first_seen_seq", facts.invocation_seq),
        )
        environment.add_event(LifecycleEvent(LEAK_EVENT, now_ns, attributes))
        write_line(
            GLOBAL_LEAK,
            WARNING,
            f"lifecycle_probe: leaked request state: {module}.{name} was rebound to a value "
            f"of invocation {facts.invocation_seq}'s event; it survives into the next "
            "invocations of this environment",
            {"code_namespace": module, "global_name": name},
            facts=facts,
            function=environment.function,
        )


_leak_watches: dict[str | None, LeakWatch] = {}


def _leak_watch(handler: Any) -> LeakWatch | None:
    """One watch per code directory: every probed handler of the function shares it."""
    try:
        root = task_root_of(handler)
        watch = _leak_watches.get(root)
        if watch is None:
            watch = _leak_watches[root] = LeakWatch(root)
        return watch
    except Exception as exc:
        report_failure("leak search set-up", exc)
        return None


def _record(
    environment: Environment,
    facts: LifecycleFacts,
    init: InitRecord | None,
    context: Any,
    incoming: tuple[str, str | None, str | None, str | None],
    end_ns: int,
    outcome: str,
    error_type: str | None,
    exc: BaseException | None,
) -> InvocationRecord:
    """The finished invocation's record, with the import tree on the first one."""
    tracer = active_tracer()
    if init is not None and tracer is not None:
        # Imports from before this environment's INIT began (a forked parent's, or those
        # of the INIT before a SnapStart snapshot) are not this INIT's.
        imports = tuple(r for r in tracer.take_init() if r.start_ns >= init.start_ns)
        init = init.replace(
            imports=imports, imports_traced_from_ns=max(tracer.started_ns, init.start_ns)
        )
    trigger, xray_trace_header, traceparent, tracestate = incoming
    # /tmp and memory at the invocation's end (after the response when deferred); before
    # the events are taken: its warnings are events of this invocation.
    reading = measure_resources(environment, facts)
    return InvocationRecord(
        facts,
        end_ns,
        outcome,
        error_type,
        init,
        environment.function,
        _string_attribute(context, "invoked_function_arn"),
        environment.take_events() if environment.events else (),
        trigger,
        xray_trace_header,
        traceparent,
        tracestate,
        exc,
        tracer.take_later() if tracer is not None and tracer.has_later else (),
        _deadline_ns(context, end_ns),
        None if reading is None else reading.rss,
        None if reading is None else reading.tmp_used,
        None if reading is None else reading.tmp_growth,
    )


def report_timeout(deadline_ns: int) -> None:
    """Export the invocation in flight as a timeout (the internal extension calls this just
    before the deadline, when Lambda is about to end it without telling the runtime)."""
    environment = current_environment()
    capture = environment.in_flight_capture
    if capture is None:
        return
    facts, init, incoming, context, sinks = capture
    if not environment.claim_timeout(facts.invocation_seq):
        return  # it finished (and was exported) in the meantime
    record = _record(
        environment, facts, init, context, incoming, deadline_ns, TIMEOUT, "Sandbox.Timedout", None
    )
    export_to(sinks, record)


# Importing ``probe`` is the earliest moment the decorator case offers: from here on the
# probe watches for the runtime's first request for work (INIT end), times the imports
# that follow (the rest of the handler module) and tracks the connections they make.
# ``install()`` called earlier sees more.
_config_at_import = Config.resolve()
if not _config_at_import.disabled:
    install_runtime_signals()
    install_connection_hooks(_config_at_import)
