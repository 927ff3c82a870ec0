"""``@probe``: one invocation record per call, handed to the sinks; the handler untouched.

The wrapper does as little as it can on the way in (a clock read, a counter, a small
tuple) and hands the finished record to the sinks on the way out. Whatever the probe
does wrong is reported and skipped: the handler's result and exceptions pass through as
the very same objects.
"""

from __future__ import annotations

import time
from os import environ

from lifecycle_probe._safe import report_failure
from lifecycle_probe.config import Config
from lifecycle_probe.environment import current_environment
from lifecycle_probe.extension import active_extension
from lifecycle_probe.facts import in_flight
from lifecycle_probe.imports import active_tracer
from lifecycle_probe.installation import (
    install_connection_hooks,
    install_runtime_signals,
    installed_options,
)
from lifecycle_probe.records import ERROR, OK, TIMEOUT, InvocationRecord
from lifecycle_probe.sinks import build_sinks, export_to, process_sinks
from lifecycle_probe.triggers import trigger_of, w3c_context_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from contextvars import Token
    from typing import Any, TypeVar

    from lifecycle_probe.environment import Environment
    from lifecycle_probe.records import InitRecord, LifecycleFacts
    from lifecycle_probe.sinks import Sink

    Handler = TypeVar("Handler", bound=Callable[..., Any])


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
        sinks = build_sinks(config)
        extension = active_extension()
        if extension is not None and sinks:
            extension.add_timeout_report(report_timeout)
        return _wrap(handler, config, sinks)
    except Exception as exc:
        report_failure("@probe", exc)
        return handler


def _wrap(handler: Handler, config: Config, sinks: tuple[Sink, ...]) -> Handler:
    gap_ns = config.proactive_init_gap_ms * 1_000_000
    clock = time.time_ns

    def invocation(event: Any, context: Any) -> Any:
        if in_flight.get() is not None:
            # A probed handler called from inside another: one invocation, one record.
            return handler(event, context)
        try:
            environment = current_environment()
            facts, init = environment.begin_invocation(
                getattr(context, "aws_request_id", None), gap_ns, clock()
            )
            token = in_flight.set(facts)
            # What the sinks need of the event, read before the handler can change it.
            incoming = None
            if sinks or process_sinks:
                incoming = _incoming(event)
                environment.in_flight_capture = (facts, init, incoming, context, sinks)
            captured = True
        except Exception as exc:
            report_failure("invocation start", exc)
            captured = False
        if not captured:
            # Called outside the except block, so that an exception from the handler
            # carries no trace of the probe's own failure in its __context__.
            return handler(event, context)
        try:
            result = handler(event, context)
        except BaseException as exc:
            _finish(environment, facts, init, token, context, incoming, exc, sinks)
            raise
        _finish(environment, facts, init, token, context, incoming, None, sinks)
        return result

    invocation.__name__ = getattr(handler, "__name__", "handler")
    invocation.__qualname__ = getattr(handler, "__qualname__", invocation.__name__)
    invocation.__doc__ = handler.__doc__
    invocation.__module__ = handler.__module__
    invocation.__wrapped__ = handler  # type: ignore[attr-defined]
    setattr(invocation, PROBED_MARK, True)
    return invocation  # type: ignore[return-value]


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
    traceparent, tracestate = w3c_context_of(event)
    return trigger_of(event), _trace_header(), traceparent, tracestate


def _deadline_ns(context: Any, now_ns: int) -> int | None:
    # awslambdaric's context keeps the deadline itself: read it rather than ask for the
    # remaining time (a clock read and arithmetic, then our own back to a deadline).
    deadline_ms = getattr(context, "_epoch_deadline_time_in_ms", None)
    if type(deadline_ms) is int:
        return deadline_ms * 1_000_000
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    try:
        return now_ns + int(remaining()) * 1_000_000
    except Exception:  # a test's half-built context: no deadline
        return None


def _finish(
    environment: Environment,
    facts: LifecycleFacts,
    init: InitRecord | None,
    token: Token[LifecycleFacts | None],
    context: Any,
    incoming: tuple[str, str | None, str | None, str | None] | None,
    exc: BaseException | None,
    sinks: tuple[Sink, ...],
) -> None:
    try:
        end_ns = time.time_ns()
        unreported = environment.end_invocation(end_ns, facts.invocation_seq)
        in_flight.reset(token)
        if incoming is None:
            return  # ``exporter="none"``: nobody to hand a record to
        if not unreported:
            return  # reported as a timeout just before the deadline; it finished after all
        outcome = OK if exc is None else ERROR
        error_type = None if exc is None else type(exc).__qualname__
        record = _record(
            environment, facts, init, context, incoming, end_ns, outcome, error_type, exc
        )
        export_to(sinks, record)
    except Exception as failure:
        report_failure("invocation end", failure)


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
    return InvocationRecord(
        facts,
        end_ns,
        outcome,
        error_type,
        init,
        environment.function,
        getattr(context, "invoked_function_arn", None),
        environment.take_events() if environment.events else (),
        trigger,
        xray_trace_header,
        traceparent,
        tracestate,
        exc,
        tracer.take_later() if tracer is not None and tracer.has_later else (),
        _deadline_ns(context, end_ns),
    )


def report_timeout(deadline_ns: int) -> None:
    """Export the invocation in flight as a timeout (the internal extension calls this just
    before the deadline, when Lambda is about to end it without telling the runtime)."""
    environment = current_environment()
    capture = environment.in_flight_capture
    if capture is None:
        return
    facts, init, incoming, context, sinks = capture
    if not environment.claim_report(facts.invocation_seq, timed_out=True):
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
