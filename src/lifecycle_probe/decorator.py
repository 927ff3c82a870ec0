"""``@probe``: one invocation record per call, handed to the sinks; the handler untouched.

The wrapper does as little as it can on the way in and out (two clock reads, a number,
a context variable) and nothing more when there is no sink. With sinks it keeps what
they need of the event and the context; the record itself is built when the handler has
returned, after the response when the internal extension flushes then. Whatever the
probe does wrong is reported and skipped: the handler's result and exceptions pass
through as the very same objects.
"""

from __future__ import annotations

import os
import time

from lifecycle_probe._safe import report_failure
from lifecycle_probe.config import Config, variable_reader
from lifecycle_probe.environment import current_environment
from lifecycle_probe.extension import active_extension, extension_for_this_environment
from lifecycle_probe.facts import in_flight
from lifecycle_probe.imports import active_tracer
from lifecycle_probe.installation import (
    install_at_probe_import,
    install_for_probe,
    installed_options,
    probe_disabled,
    watch_powertools_cold_start,
)
from lifecycle_probe.leaks import LeakWatch, task_root_of
from lifecycle_probe.probe_threads import probe_work
from lifecycle_probe.records import (
    ERROR,
    LEAK_EVENT,
    OK,
    OTHER_TRIGGER,
    RESTORED,
    TIMEOUT,
    InvocationRecord,
    LifecycleEvent,
)
from lifecycle_probe.runtime_hooks import runtime_client_wrapped
from lifecycle_probe.sinks import build_sinks, export_to, process_sinks
from lifecycle_probe.sinks.flush import before_drains

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, overload

    from lifecycle_probe.environment import Environment, Invocation
    from lifecycle_probe.extension import InternalExtension
    from lifecycle_probe.rare_records import InitDisagreement, PlatformFigures
    from lifecycle_probe.records import LifecycleFacts
    from lifecycle_probe.sinks import Sink

    Handler = TypeVar("Handler", bound=Callable[..., Any])
    Incoming = tuple[str, str | None, str | None, str | None]


__all__ = ["PROBED_MARK", "probe"]


# Set on every wrapper the probe makes, so that a probed handler is never probed twice
# (the zero-code entry point wrapping a handler that already carries ``@probe``).
PROBED_MARK = "__lifecycle_probe__"


if TYPE_CHECKING:
    # For the type checker only (``typing`` stays off the INIT path): a probed handler has
    # the handler's own type, whether ``@probe`` is used bare or with options.
    @overload
    def probe(handler: Handler, /, **options: Any) -> Handler: ...

    @overload
    def probe(handler: None = None, /, **options: Any) -> Callable[[Handler], Handler]: ...


def probe(handler: Handler | None = None, /, **options: Any) -> Any:
    """Decorate a Lambda handler ``(event, context)``, or a method ``(self, event,
    context)`` (static and class methods too); usable bare or with options.

    ``@probe`` or ``@probe(exporter="console", proactive_init_gap_ms=500)``. Options beat
    the options given to ``install()``, which beat ``LIFECYCLE_PROBE_*`` variables, which
    beat defaults. When disabled, the handler itself is returned: a pure pass-through. A
    handler that is already probed is returned as it is. The probed handler has the
    handler's own type.
    """
    if handler is None:

        def decorate(function: Handler) -> Handler:
            return probe(function, **options)

        return decorate
    try:
        if isinstance(handler, (staticmethod, classmethod)):
            # ``@probe`` above ``@staticmethod``/``@classmethod``: probe the function, and
            # give the class the same kind of method back.
            return type(handler)(probe(handler.__func__, **options))
        if getattr(handler, PROBED_MARK, False):
            return handler
        asked = {**installed_options(), **options}
        config = Config.resolve(**asked)
        if config.disabled:
            # Explicit options win: what importing ``probe`` put in place goes, unless an
            # enabled probe or install() relies on it.
            probe_disabled()
            return handler
        install_for_probe(config, asked)
        if "emf" in config.exporter:
            watch_powertools_cold_start()  # (a post-import hook: imports nothing itself)
        flush_timeout_s = config.flush_timeout_ms / 1000
        with probe_work():  # the sinks' modules are the probe's imports, not the function's
            sinks = build_sinks(
                config,
                lambda: extension_for_this_environment(
                    flush_timeout_s, config.telemetry_api, config.exporter
                ),
            )
        extension = active_extension()
        if extension is not None and sinks:
            _report_timeouts_to(extension)
        return _wrap(handler, config, sinks)
    except Exception as exc:
        report_failure("@probe", exc)
        return handler


def _takes_owner(handler: Any) -> bool:
    """Whether ``handler`` is a method's function, called with its instance (or class)
    before ``(event, context)``: three positional parameters without defaults, or at
    least three with the first named ``self`` or ``cls``. A bound method has its owner
    already, and a callable without code (a builtin, an object) is called as it is."""
    code = getattr(handler, "__code__", None)
    if code is None or getattr(handler, "__self__", None) is not None:
        return False
    positional = int(getattr(code, "co_argcount", 0))
    required = positional - len(getattr(handler, "__defaults__", None) or ())
    names = getattr(code, "co_varnames", ())
    return required == 3 or (positional >= 3 and names[:1] in (("self",), ("cls",)))


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


class Capture:
    """What the sinks need of one invocation beside its numbers, from its start to its record.

    Made only when some sink will take the record. The record is built from it when the
    handler has ended (after the response, when the internal extension flushes then) or,
    for an invocation Lambda is about to time out, by :func:`report_timeout`.
    """

    __slots__ = (
        "end_ns",
        "error_type",
        "event",
        "exception",
        "incoming",
        "invocation",
        "outcome",
        "sinks",
        "watch",
    )

    def __init__(
        self,
        invocation: Invocation,
        incoming: Incoming,
        sinks: tuple[Sink, ...],
        watch: LeakWatch | None,
        event: Any,
    ) -> None:
        self.invocation = invocation
        # The trigger and trace context, read before the handler could change the event.
        self.incoming = incoming
        self.sinks = sinks
        # The event itself only for the leak search (never exported).
        self.watch = watch
        self.event = event if watch is not None else None
        self.end_ns = 0
        self.outcome = OK
        self.error_type: str | None = None
        self.exception: BaseException | None = None

    def ended(self, end_ns: int, exc: BaseException | None) -> None:
        """The handler returned (``exc`` None) or raised ``exc`` at ``end_ns``."""
        self.end_ns = end_ns
        if exc is not None:
            self.outcome = ERROR
            self.error_type = type(exc).__qualname__
            self.exception = exc


# The captures of the invocations running now, for report_timeout (the internal
# extension's thread finds the invocation through the environment, its capture here).
_capturing: dict[Invocation, Capture] = {}
os.register_at_fork(after_in_child=_capturing.clear)


def _wrap(handler: Handler, config: Config, sinks: tuple[Sink, ...]) -> Handler:
    gap_ns = config.proactive_init_gap_ms * 1_000_000
    clock = time.time_ns
    reads_event = any(sink.reads_event for sink in sinks)
    watch = _leak_watch(handler) if sinks and config.globals == "warn" else None
    # When every sink flushes after the response through the internal extension, the
    # record itself is built there too (with the leak search): the caller only queues.
    extensions = {id(getattr(sink, "extension", None)) for sink in sinks}
    deferrable = bool(sinks) and id(None) not in extensions and len(extensions) == 1
    extension = getattr(sinks[0], "extension", None) if deferrable else None

    def begin(event: Any, context: Any) -> Invocation | None:
        """Start the invocation; None when the probe must stay out of it."""
        outer = in_flight.get()
        if outer is not None and not outer.ended:
            return None  # a probed handler called from inside another: one record
        invocation = None
        try:
            # What the sinks need of the event, read before the handler can change it,
            # and before anything is marked in flight.
            if reads_event or process_sinks:
                incoming: Incoming | None = _incoming(event)
            elif sinks:
                # Sinks that use nothing of the event (EMF, the log lines) skip parsing it.
                incoming = (OTHER_TRIGGER, _trace_header(), None, None)
            else:
                incoming = None  # ``exporter="none"``: numbers only, nobody to build for
            invocation = current_environment().begin_invocation(context, gap_ns, clock())
            if incoming is not None:
                _capturing[invocation] = Capture(invocation, incoming, sinks, watch, event)
                if watch is not None and (
                    invocation.init is not None or not runtime_client_wrapped()
                ):
                    # The globals as INIT left them, before the handler runs; and before
                    # every call where no Lambda runtime calls the handler (a script, a
                    # batch job): the caller's own code runs between the calls there, and
                    # what it rebinds (``for order in orders: handler(order, None)``) is
                    # not the handler's doing. Under a runtime nothing runs between them.
                    watch.baseline()
            # Last: once set, finish must run to end it.
            in_flight.set(invocation)
        except Exception as exc:
            report_failure("invocation start", exc)
            if invocation is not None:  # begun but not handed over: end it, unreported
                try:
                    _capturing.pop(invocation, None)
                    invocation.environment.end_invocation(invocation, clock())
                except Exception:
                    pass  # (already reported once above)
            return None
        return invocation

    def finish(invocation: Invocation, exc: BaseException | None) -> None:
        try:
            end_ns = clock()
            environment = invocation.environment
            if environment is not current_environment():
                # A child process the handler forked, leaving through this wrapper: the
                # invocation is its parent's to end and report, the child is an environment
                # of its own (a second record would repeat the parent's request and INIT).
                in_flight.set(None)
                return
            unreported = environment.end_invocation(invocation, end_ns)
            if not _capturing:
                return  # ``exporter="none"``: nobody to hand a record to
            capture = _capturing.pop(invocation, None)
            if capture is None or not unreported:
                # no sink, or reported as a timeout just before the deadline: it finished
                # after all, and its record has gone out
                return
            if exc is None:
                capture.end_ns = end_ns  # (Capture.ended's common case, without its call)
            else:
                capture.ended(end_ns, exc)
            if extension is not None and extension.registered and not process_sinks:
                _ended.append(capture)  # built and exported after the response
            else:
                _export(capture)
        except Exception as failure:
            report_failure("invocation end", failure)

    def invoke_with_sinks(event: Any, context: Any) -> Any:
        invocation = begin(event, context)
        if invocation is None:
            # Called outside the except block, so that an exception from the handler
            # carries no trace of the probe's own failure in its __context__.
            return handler(event, context)
        try:
            result = handler(event, context)
        except BaseException as exc:
            finish(invocation, exc)
            raise
        finish(invocation, None)
        return result

    def invoke(event: Any, context: Any) -> Any:
        outer = in_flight.get()
        if sinks or process_sinks or (outer is not None and not outer.ended):
            return invoke_with_sinks(event, context)  # (a nested call is left alone there)
        # No sink: a number, two clock reads and the context variable, inline (at well
        # under a microsecond in all, each Python call more would show).
        try:
            environment = current_environment()
            invocation = environment.begin_invocation(context, gap_ns, clock())
            in_flight.set(invocation)
        except Exception as exc:
            report_failure("invocation start", exc)
            invocation = None
        if invocation is None:
            return handler(event, context)  # (outside the except block, as above)
        try:
            return handler(event, context)
        finally:
            try:
                end_ns = clock()
                if environment is current_environment():
                    environment.end_invocation(invocation, end_ns)
                else:  # a forked child: the parent's invocation (see finish)
                    in_flight.set(None)
            except Exception as failure:
                report_failure("invocation end", failure)

    async def invoke_async(event: Any, context: Any) -> Any:
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

    # A method ``(self, event, context)``: the wrapper, a function in the class, is bound
    # like the method was. Its own pair of wrappers goes through begin/finish, so that the
    # plain function's path above pays nothing for methods.
    def invoke_method(owner: Any, event: Any, context: Any) -> Any:
        invocation = begin(event, context)
        if invocation is None:
            return handler(owner, event, context)  # (outside any except block, as above)
        try:
            result = handler(owner, event, context)
        except BaseException as exc:
            finish(invocation, exc)
            raise
        finish(invocation, None)
        return result

    async def invoke_method_async(owner: Any, event: Any, context: Any) -> Any:
        started = begin(event, context)
        if started is None:
            return await handler(owner, event, context)
        try:
            result = await handler(owner, event, context)
        except BaseException as exc:
            finish(started, exc)
            raise
        finish(started, None)
        return result

    code = getattr(handler, "__code__", None)
    is_async = code is not None and bool(getattr(code, "co_flags", 0) & _CO_COROUTINE)
    if _takes_owner(handler):
        wrapper: Any = invoke_method_async if is_async else invoke_method
    elif is_async:
        wrapper = invoke_async
    else:
        # With sinks, invoke would always hand over to invoke_with_sinks: one call less.
        wrapper = invoke_with_sinks if sinks else invoke
    wrapper.__name__ = getattr(handler, "__name__", "handler")
    wrapper.__qualname__ = getattr(handler, "__qualname__", wrapper.__name__)
    wrapper.__doc__ = getattr(handler, "__doc__", None)
    wrapper.__module__ = getattr(handler, "__module__", None)
    wrapper.__wrapped__ = handler
    setattr(wrapper, PROBED_MARK, True)
    return wrapper  # type: ignore[no-any-return]


# The runtime sets _X_AMZN_TRACE_ID for each invocation before calling the handler: read
# each time, with one lookup in os.environ's own mapping.
_trace_header = variable_reader("_X_AMZN_TRACE_ID")


# What the records need and INIT does not, loaded by its first use: the probe's own import
# (on whichever thread: the caller's, with a sync flush), kept here from then on.
# triggers.py's readers of the event, with the first event a sink reads (OpenTelemetry's
# and the console's do; EMF's and the log lines' never): (w3c_context_of, trigger_of).
_event_readers: tuple[Any, Any] | None = None
# resources.measure, with the first record (after the response, when deferred).
_measure_resources: Any = None


def _load_event_readers() -> tuple[Any, Any]:
    global _event_readers
    with probe_work():
        from lifecycle_probe.triggers import trigger_of, w3c_context_of
    _event_readers = (w3c_context_of, trigger_of)
    return _event_readers


def _load_measure_resources() -> Any:
    global _measure_resources
    with probe_work():
        from lifecycle_probe.resources import measure
    _measure_resources = measure
    return measure


def _incoming(event: Any) -> tuple[str, str | None, str | None, str | None]:
    """The trigger and the incoming trace context (X-Ray, then W3C headers) of an event."""
    w3c_context_of, trigger_of = _event_readers or _load_event_readers()
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
# records are built and exported there (_export_ended), before the sinks drain. A list:
# append and pop(0) are each one C call, atomic under the GIL (nothing waits on it, so
# it needs no queue).
_ended: list[Capture] = []


def _export_ended() -> None:
    while True:
        try:
            capture = _ended.pop(0)
        except IndexError:
            return
        if capture.invocation.environment is not current_environment():
            continue  # queued by the parent of this forked process: the parent's to export
        try:
            _export(capture)
        except Exception as failure:
            report_failure("invocation end", failure)


before_drains.append(_export_ended)


def _export(capture: Capture) -> None:
    """Build the record of an ended invocation, with its leaks, and hand it to the sinks."""
    invocation = capture.invocation
    environment = invocation.environment
    # What building the record imports (the log lines of a leak, the hazard report, the
    # comparison with Lambda's figures) is the probe's, also on the caller's thread (a
    # sync flush), where it would otherwise be recorded as the function's next import.
    with probe_work():
        if capture.watch is not None:
            _note_leaks(capture.watch, capture.event, environment, invocation.facts())
        if invocation.start == RESTORED:
            # The first invocation after a SnapStart restore: what the snapshot shares.
            from lifecycle_probe.snapstart import report as report_hazards

            report_hazards(environment, invocation.facts())
        record = _record(capture, capture.end_ns, capture.outcome, capture.error_type)
        export_to(capture.sinks, record)


def _note_leaks(
    watch: LeakWatch, event: Any, environment: Environment, facts: LifecycleFacts
) -> None:
    try:
        leaked = watch.after_invocation(event, facts.invocation_seq, facts.environment_id)
    except Exception as exc:
        report_failure("leak search", exc)
        return
    if not leaked:
        return
    from lifecycle_probe.loglines import GLOBAL_LEAK, WARNING, write_line

    now_ns = time.time_ns()
    for module, name in leaked:
        attributes = (
            ("code.namespace", module),
            ("lifecycle.global.name", name),
            ("lifecycle.global.first_seen_seq", facts.invocation_seq),
        )
        environment.add_event(
            LifecycleEvent(name=LEAK_EVENT, time_ns=now_ns, attributes=attributes)
        )
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
    capture: Capture, end_ns: int, outcome: str, error_type: str | None
) -> InvocationRecord:
    """The finished invocation's record, with the import tree on the first one, and
    Lambda's own figures that arrived since the previous export (and how many were given
    up)."""
    invocation = capture.invocation
    environment = invocation.environment
    facts = invocation.facts()
    init = invocation.init
    restore = invocation.restore
    tracer = active_tracer()
    if init is not None and tracer is not None:
        # Imports from before this environment's INIT began (a forked parent's) are not
        # this INIT's; after a SnapStart restore, those made from the restore on are the
        # restore's, and those before it the INIT's, which the snapshot kept.
        taken = tracer.take_init()
        restore_start_ns = None if restore is None else restore.start_ns
        init = init.replace(
            imports=tuple(
                r
                for r in taken
                if r.start_ns >= init.start_ns
                and (restore_start_ns is None or r.start_ns < restore_start_ns)
            ),
            imports_traced_from_ns=max(tracer.started_ns, init.start_ns),
        )
        if restore is not None:
            restore = restore.replace(
                imports=tuple(r for r in taken if r.start_ns >= restore.start_ns)
            )
    extension = active_extension()
    figures = take_figures(extension)
    trigger, xray_trace_header, traceparent, tracestate = capture.incoming
    # /tmp and memory at the invocation's end (after the response when deferred); before
    # the events are taken: its warnings are events of this invocation.
    measure_resources = _measure_resources or _load_measure_resources()
    reading = measure_resources(environment, facts)
    return InvocationRecord(
        facts=facts,
        end_ns=end_ns,
        outcome=outcome,
        error_type=error_type,
        init=init,
        function=environment.function,
        invoked_function_arn=invocation.invoked_function_arn(),
        events=environment.take_events() if environment.events else (),
        trigger=trigger,
        xray_trace_header=xray_trace_header,
        traceparent=traceparent,
        tracestate=tracestate,
        exception=capture.exception if outcome == ERROR else None,
        imports=tracer.take_later() if tracer is not None and tracer.has_later else (),
        deadline_ns=_deadline_ns(invocation.context, end_ns),
        rss_bytes=None if reading is None else reading.rss,
        tmp_used_bytes=None if reading is None else reading.tmp_used,
        tmp_growth_bytes=None if reading is None else reading.tmp_growth,
        restore=restore,
        platform=figures,
        init_disagreements=_init_disagreements(figures, environment) if figures else (),
        platform_evicted=take_evicted(extension),
    )


def report_timeout(deadline_ns: int) -> None:
    """Export the invocation in flight as a timeout (the internal extension calls this just
    before the deadline, when Lambda is about to end it without telling the runtime)."""
    environment = current_environment()
    invocation = environment.running_invocation()
    capture = None if invocation is None else _capturing.get(invocation)
    if invocation is None or capture is None:
        return
    if not environment.claim_timeout(invocation.seq):
        return  # it finished (and was exported) in the meantime
    export_to(capture.sinks, _record(capture, deadline_ns, TIMEOUT, "Sandbox.Timedout"))


# Importing ``probe`` is the earliest moment the decorator case offers (INIT end, the
# imports and connections that follow); ``install()`` called earlier sees more, and its
# options, ``disabled`` included, are kept.
install_at_probe_import()


def take_figures(extension: InternalExtension | None) -> tuple[PlatformFigures, ...]:
    """Lambda's figures that arrived since the last export, oldest first (none without a
    subscription: outside Lambda, or ``LIFECYCLE_PROBE_TELEMETRY_API=off``)."""
    return () if extension is None else extension.take_platform_figures()


def take_evicted(extension: InternalExtension | None) -> int:
    """How many of Lambda's reports were given up unexported since the last export (more
    waited than the listener keeps), for this export to count."""
    return 0 if extension is None else extension.take_platform_evicted()


def _init_disagreements(
    figures: tuple[PlatformFigures, ...], environment: Environment
) -> tuple[InitDisagreement, ...]:
    # Imported once Lambda's figures have come, after the response: never at INIT.
    from lifecycle_probe.lambda_figures import disagreements

    return disagreements(figures, environment)
