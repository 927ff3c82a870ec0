"""Invocation records to finished spans, built from the recorded timestamps.

Every span here is over before it is built: the invocation, INIT and the imports all
ended before the record reached the sink. So a span is a plain :class:`Span` (what OTLP
carries of it), without a tracer, span processors or a context to activate: that
machinery is for spans still running, and it cost several times the rest of the export.
Nothing here imports OpenTelemetry unless ``OTEL_TRACES_SAMPLER`` names a sampler.

Per DESIGN.md §2: the invocation span (SERVER, named after the function) continues the
incoming trace context (W3C headers of an HTTP event first, then X-Ray's); ``lambda.init``
(INIT start from the OS to INIT end) is its child in the environment's first trace; a
``lambda.import`` child per import at or above the import threshold hangs under its
nearest ancestor with a span. Spans are recorded whatever X-Ray sampled, unless
``OTEL_TRACES_SAMPLER`` names a sampler, which then decides per invocation.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

from lifecycle_probe._safe import warn_once
from lifecycle_probe.records import COLD_START_TYPES, ERROR, PLATFORM_REPORT_EVENT, TIMEOUT
from lifecycle_probe.sinks.otel.trace_context import (
    parse_traceparent,
    parse_tracestate,
    parse_xray,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace.sampling import Sampler

    from lifecycle_probe.rare_records import InitFailureRecord, PlatformFigures, RestoreRecord
    from lifecycle_probe.records import FunctionFacts, ImportRecord, InitRecord, InvocationRecord

__all__ = ["KIND_SERVER", "STATUS_ERROR", "Span", "Spans", "env_sampler"]

# OTLP's enumerations, as the wire carries them.
KIND_INTERNAL = 1
KIND_SERVER = 2
STATUS_UNSET = 0
STATUS_ERROR = 2

# (name, time, attributes) of a span event.
SpanEvent = tuple[str, int, dict[str, Any]]


class Span:
    """One finished span: what an OTLP export carries of it (the resource and the scope
    are the export's, shared by every span)."""

    __slots__ = (
        "attributes",
        "end_ns",
        "events",
        "kind",
        "name",
        "parent_id",
        "parent_remote",
        "span_id",
        "start_ns",
        "status_code",
        "status_message",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int | None,
        attributes: dict[str, Any],
        start_ns: int,
        end_ns: int,
        *,
        trace_state: str = "",
        parent_remote: bool = False,
        kind: int = KIND_INTERNAL,
        status_code: int = STATUS_UNSET,
        status_message: str | None = None,
        events: Sequence[SpanEvent] = (),
    ) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.parent_remote = parent_remote
        self.trace_state = trace_state
        self.attributes = attributes
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.kind = kind
        self.status_code = status_code
        self.status_message = status_message
        self.events = events


class RemoteParent:
    """The incoming trace context an invocation span continues."""

    __slots__ = ("sampled", "span_id", "trace_id", "trace_state")

    def __init__(self, trace_id: int, span_id: int, sampled: bool, trace_state: str) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.trace_state = trace_state


# A generator of the probe's own, seeded from the OS: a function that seeds ``random``
# for its own reasons neither repeats the probe's ids nor sees its sequence disturbed.
_ids = random.Random()
# A forked child draws new ids, never its parent's.
os.register_at_fork(after_in_child=_ids.seed)


def _random_id(bits: int) -> int:
    """A random id of ``bits`` bits; never 0, which OpenTelemetry reads as "no id"."""
    value = _ids.getrandbits(bits)
    while not value:
        value = _ids.getrandbits(bits)
    return value


def _span_id() -> int:
    # (0 is drawn once in 2**64: the loop of _random_id only then)
    return _ids.getrandbits(64) or _random_id(64)


def _trace_id() -> int:
    return _ids.getrandbits(128) or _random_id(128)


# The oldest OpenTelemetry SDK whose samplers the probe was tested with.
_OLDEST_SDK = (1, 27)


def env_sampler() -> Sampler | None:
    """The sampler ``OTEL_TRACES_SAMPLER`` names, or None: then every invocation is kept.

    The SDK is imported only here, and it may be the function's own copy (on Lambda, the
    function's directory comes first on ``sys.path``): one that cannot serve (absent,
    older than 1.27, broken) is said in one warning and every invocation is kept.
    """
    name = os.environ.get("OTEL_TRACES_SAMPLER")
    if not name:
        return None
    version = "absent"
    try:
        from opentelemetry.sdk.version import __version__ as version

        if tuple(int(part) for part in version.split(".")[:2]) < _OLDEST_SDK:
            raise ImportError(f"opentelemetry-sdk {version} is older than 1.27")
        from opentelemetry.sdk.trace import TracerProvider

        # The provider reads OTEL_TRACES_SAMPLER(_ARG) the way every OTel SDK user expects.
        return TracerProvider(shutdown_on_exit=False).sampler
    except Exception as exc:
        warn_once(
            "otel:sampler",
            "lifecycle_probe: OTEL_TRACES_SAMPLER=%r needs opentelemetry-sdk >= 1.27, which "
            "cannot be used here (version %s: %s); every invocation's spans are kept",
            name,
            version,
            type(exc).__name__,
        )
        return None


class Spans:
    """Builds the spans of one invocation record."""

    def __init__(self, import_min_ns: int, sampler: Sampler | None = None) -> None:
        self._import_min_ns = import_min_ns
        self._sampler = sampler

    def of(self, record: InvocationRecord) -> tuple[list[Span], tuple[int, int, bool]]:
        """The record's spans (none when a sampler drops it) and (trace id, invocation span
        id, sampled) for the metrics' exemplars."""
        parent = remote_parent(record)
        trace_id = parent.trace_id if parent is not None else _trace_id()
        span_id = _span_id()
        name = record.function.function_name or "lambda.invoke"
        attributes = invocation_attributes(record)
        trace_state = parent.trace_state if parent is not None else ""
        if self._sampler is not None:
            decided = _sample(self._sampler, parent, trace_id, name, attributes)
            if decided is None:
                return [], (trace_id, span_id, False)
            attributes, sampled_state = decided
            if sampled_state is not None:
                trace_state = sampled_state
        spans = [
            self._invocation_span(record, name, trace_id, span_id, parent, trace_state, attributes)
        ]
        if record.init is not None:
            self._init_spans(record.init, trace_id, span_id, trace_state, spans)
        if record.restore is not None:
            self._restore_spans(record.restore, trace_id, span_id, trace_state, spans)
        if record.imports:
            self._import_spans(record.imports, trace_id, span_id, trace_state, spans)
        return spans, (trace_id, span_id, True)

    def of_init_failure(self, failure: InitFailureRecord) -> list[Span]:
        """A failed INIT: a ``lambda.init`` span of its own trace (no invocation ever
        began), with error status and the error's type (never its message, which may
        quote a DSN or a line of code), and its ``lambda.import`` children up to the
        failure. A sampler is not asked: there is one such span per failed environment,
        and it is the one users most need to see."""
        attributes: dict[str, Any] = {
            "lifecycle.environment.id": failure.environment_id,
            "lifecycle.init_type": failure.init_type,
            "lifecycle.init.start_source": failure.start_source,
            "lifecycle.init.failed": True,
            "error.type": failure.error_type,
            "process.pid": failure.pid,
        }
        if failure.handler:
            attributes["lifecycle.handler"] = failure.handler
        if failure.imports_traced_from_ns is not None:
            attributes["lifecycle.import.traced_from_s"] = max(
                0.0, (failure.imports_traced_from_ns - failure.start_ns) / 1e9
            )
        trace_id, span_id = _trace_id(), _span_id()
        spans = [
            Span(
                "lambda.init",
                trace_id,
                span_id,
                None,
                attributes,
                failure.start_ns,
                failure.end_ns,
                status_code=STATUS_ERROR,
                status_message=failure.error_type,
            )
        ]
        self._import_spans(failure.imports, trace_id, span_id, "", spans)
        return spans

    def _invocation_span(
        self,
        record: InvocationRecord,
        name: str,
        trace_id: int,
        span_id: int,
        parent: RemoteParent | None,
        trace_state: str,
        attributes: dict[str, Any],
    ) -> Span:
        events: list[SpanEvent] = []
        # (tested first: most invocations carry neither, and building nothing is free)
        if record.events:
            events = [
                (event.name, event.time_ns, dict(event.attributes)) for event in record.events
            ]
        if record.platform:
            # Lambda's own figures that reached this export, each naming its request.
            events.extend(platform_report_event(f, record.end_ns) for f in record.platform)
        status_code, message = STATUS_UNSET, None
        if record.outcome == ERROR:
            if record.exception is not None:
                events.append(exception_event(record.exception, record.end_ns))
            status_code, message = STATUS_ERROR, record.error_type
        elif record.outcome == TIMEOUT:
            status_code, message = STATUS_ERROR, "timeout"
        return Span(
            name,
            trace_id,
            span_id,
            parent.span_id if parent is not None else None,
            attributes,
            # Facts always carry the start when the invocation went through the probe.
            record.facts.invoke_start_ns or record.end_ns,
            record.end_ns,
            trace_state=trace_state,
            parent_remote=parent is not None,
            kind=KIND_SERVER,
            status_code=status_code,
            status_message=message,
            events=events,
        )

    def _init_spans(
        self, init: InitRecord, trace_id: int, parent_id: int, trace_state: str, spans: list[Span]
    ) -> None:
        attributes: dict[str, Any] = {
            "lifecycle.environment.id": init.environment_id,
            "lifecycle.init_type": init.init_type,
            "lifecycle.init.start_source": init.start_source,
            "lifecycle.init.end_source": init.end_source,
            "lifecycle.init.estimated": init.estimated,
            "lifecycle.restored": init.restored,
            "process.pid": init.pid,
        }
        if init.imports_traced_from_ns is not None:
            attributes["lifecycle.import.traced_from_s"] = max(
                0.0, (init.imports_traced_from_ns - init.start_ns) / 1e9
            )
        self._phase_spans("lambda.init", init, attributes, trace_id, parent_id, trace_state, spans)

    def _restore_spans(
        self,
        restore: RestoreRecord,
        trace_id: int,
        parent_id: int,
        trace_state: str,
        spans: list[Span],
    ) -> None:
        """``lambda.restore``: a SnapStart restore, from the after-restore hook to the
        runtime's first request after it, beside the ``lambda.init`` of the snapshot."""
        attributes: dict[str, Any] = {
            "lifecycle.environment.id": restore.environment_id,
            "lifecycle.restore.end_source": restore.end_source,
            "process.pid": restore.pid,
        }
        self._phase_spans(
            "lambda.restore", restore, attributes, trace_id, parent_id, trace_state, spans
        )

    def _phase_spans(
        self,
        name: str,
        phase: InitRecord | RestoreRecord,
        attributes: dict[str, Any],
        trace_id: int,
        parent_id: int,
        trace_state: str,
        spans: list[Span],
    ) -> None:
        """The span of an INIT or a restore, and under it a span per import it made."""
        span_id = _span_id()
        spans.append(
            Span(
                name,
                trace_id,
                span_id,
                parent_id,
                attributes,
                phase.start_ns,
                phase.end_ns,
                trace_state=trace_state,
            )
        )
        self._import_spans(phase.imports, trace_id, span_id, trace_state, spans)

    def _import_spans(
        self,
        imports: Sequence[ImportRecord],
        trace_id: int,
        parent_id: int,
        trace_state: str,
        spans: list[Span],
    ) -> None:
        kept: dict[int, int] = {}  # import id -> its span id
        by_id = {record.import_id: record for record in imports}
        for record in sorted(imports, key=lambda r: r.start_ns):
            # (a failed import always: however quick, it is what a failed INIT is about)
            if record.error_type is None and record.end_ns - record.start_ns < self._import_min_ns:
                continue
            # The nearest ancestor with a span of its own, else INIT (or the invocation).
            ancestor = record.parent_id
            above = parent_id
            while ancestor is not None:
                if ancestor in kept:
                    above = kept[ancestor]
                    break
                above_record = by_id.get(ancestor)
                ancestor = None if above_record is None else above_record.parent_id
            attributes: dict[str, Any] = {
                "code.namespace": record.module,
                "lifecycle.import.self_s": record.self_s,
                "lifecycle.import.origin": record.origin,
            }
            if not record.during_init:
                attributes["lifecycle.import.after_init"] = True
            span_id = _span_id()
            spans.append(
                Span(
                    "lambda.import",
                    trace_id,
                    span_id,
                    above,
                    attributes,
                    record.start_ns,
                    record.end_ns,
                    trace_state=trace_state,
                    status_code=STATUS_UNSET if record.error_type is None else STATUS_ERROR,
                    status_message=record.error_type,
                )
            )
            kept[record.import_id] = span_id


def _sample(
    sampler: Sampler,
    parent: RemoteParent | None,
    trace_id: int,
    name: str,
    attributes: dict[str, Any],
) -> tuple[dict[str, Any], str | None] | None:
    """Ask an SDK sampler about an invocation span: None to drop it, else its attributes
    and trace state (None: unchanged), as the SDK gives a span the sampler's."""
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.sampling import Decision
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        SpanKind,
        TraceFlags,
        TraceState,
        set_span_in_context,
    )

    # An empty Context, not None: None would make a parent-based sampler look at whatever
    # span is current on this thread, unrelated to the invocation.
    context = Context()
    if parent is not None:
        state = TraceState.from_header([parent.trace_state]) if parent.trace_state else None
        flags = TraceFlags(TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT)
        remote = SpanContext(parent.trace_id, parent.span_id, True, flags, state)
        context = set_span_in_context(NonRecordingSpan(remote), Context())
    result = sampler.should_sample(context, trace_id, name, SpanKind.SERVER, attributes)
    if result.decision is not Decision.RECORD_AND_SAMPLE:
        return None
    state_header = None if result.trace_state is None else result.trace_state.to_header()
    return dict(result.attributes or {}), state_header


def platform_report_event(figures: PlatformFigures, time_ns: int) -> SpanEvent:
    """``lifecycle.platform.report``: what Lambda reported of one request (which may be
    an earlier one than the span's); a figure Lambda did not give is left out."""
    attributes: dict[str, Any] = {"faas.invocation_id": figures.request_id}
    for name, value in (
        ("lifecycle.platform.duration_ms", figures.duration_ms),
        ("lifecycle.platform.billed_duration_ms", figures.billed_duration_ms),
        ("lifecycle.platform.max_memory_used_mb", figures.max_memory_used_mb),
        ("lifecycle.platform.init_duration_ms", figures.init_duration_ms),
        ("lifecycle.platform.restore_duration_ms", figures.restore_duration_ms),
    ):
        if value is not None:
            attributes[name] = value
    return PLATFORM_REPORT_EVENT, time_ns, attributes


def exception_event(exc: BaseException, time_ns: int) -> SpanEvent:
    """The ``exception`` event of OTel's semantic conventions, without the message: messages
    carry payload values (KeyError('alice@example.com'), f"bad token {token}") and nothing
    of the payload may reach telemetry."""
    kind = type(exc)
    module, qualname = kind.__module__, kind.__qualname__
    return (
        "exception",
        time_ns,
        {
            "exception.type": f"{module}.{qualname}" if module != "builtins" else qualname,
            "exception.message": "",
            "exception.stacktrace": _stack_without_message(exc),
        },
    )


def _stack_without_message(exc: BaseException) -> str:
    """The traceback's frames (file, line number, function) and the exception's type, as
    Python prints them, minus the message and minus the source lines: a line such as
    ``psycopg2.connect("postgresql://app:s3cret@db/orders")`` would carry the password
    into the span event."""
    import traceback

    frames = "".join(
        f'  File "{frame.f_code.co_filename}", line {lineno}, in {frame.f_code.co_name}\n'
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
    )
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return f"Traceback (most recent call last):\n{frames}{kind}"


def invocation_attributes(record: InvocationRecord) -> dict[str, Any]:
    """The invocation span's attributes (DESIGN.md §2), from the record alone."""
    facts = record.facts
    function = record.function
    attributes: dict[str, Any] = {
        "faas.coldstart": facts.start in COLD_START_TYPES,
        "faas.trigger": record.trigger,
        "cloud.provider": "aws",
        "lifecycle.start": str(facts.start),
        "lifecycle.invocation_seq": facts.invocation_seq,
        "lifecycle.environment.id": facts.environment_id,
        "lifecycle.environment.age_s": facts.environment_age_s,
        "lifecycle.init_type": facts.init_type,
        "lifecycle.outcome": record.outcome,
    }
    # What the platform did not say is left out, not sent empty.
    if facts.request_id is not None:
        attributes["faas.invocation_id"] = facts.request_id
    attributes.update(_function_attributes(function, record.invoked_function_arn))
    if facts.idle_s is not None:
        attributes["lifecycle.idle_s"] = facts.idle_s
    # /tmp and memory at the invocation's end (resources.py); absent where unmeasured.
    rss = record.rss_bytes
    if rss is not None:
        attributes["lifecycle.memory.rss_bytes"] = rss
        if function.memory_mb:
            attributes["lifecycle.memory.share"] = rss / (function.memory_mb * 1024 * 1024)
    if record.tmp_used_bytes is not None:
        attributes["lifecycle.tmp.used_bytes"] = record.tmp_used_bytes
    if record.tmp_growth_bytes is not None:
        attributes["lifecycle.tmp.growth_bytes"] = record.tmp_growth_bytes
    return attributes


# (function facts, invoked ARN, their attributes) of the last invocation span: the same for
# every invocation of an environment (Lambda's variables, the ARN it is invoked as), so
# made once, not per span. The facts are an immutable record, compared by identity.
_last_function: list[tuple[FunctionFacts, str | None, dict[str, Any]]] = []


def _function_attributes(function: FunctionFacts, arn: str | None) -> dict[str, Any]:
    """The invocation span's attributes that come from the function and its ARN, in order."""
    last = _last_function[0] if _last_function else None
    if last is not None and last[0] is function and last[1] == arn:
        return last[2]
    attributes: dict[str, Any] = {}
    if function.function_name is not None:
        attributes["faas.name"] = function.function_name
    if function.function_version is not None:
        attributes["faas.version"] = function.function_version
    if function.log_stream is not None:
        attributes["faas.instance"] = function.log_stream
    if function.memory_mb is not None:
        attributes["faas.max_memory"] = function.memory_mb * 1024 * 1024
    if function.region is not None:
        attributes["cloud.region"] = function.region
    if arn:
        attributes["cloud.resource_id"] = arn
        account = _account_of(arn)
        if account is not None:
            attributes["cloud.account.id"] = account
    # (one assignment: another thread reads either the old entry or this one, whole)
    _last_function[:] = [(function, arn, attributes)]
    return attributes


def _account_of(arn: str | None) -> str | None:
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    if not arn:
        return None
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 and parts[4] else None


def remote_parent(record: InvocationRecord) -> RemoteParent | None:
    """The incoming trace context: W3C headers of an HTTP event first, then X-Ray's."""
    if record.traceparent is None and record.xray_trace_header is None:
        return None  # (no context came in: nothing to parse, two calls saved)
    parsed = parse_traceparent(record.traceparent)
    from_w3c = parsed is not None
    if parsed is None:
        parsed = parse_xray(record.xray_trace_header)
    if parsed is None:
        return None
    trace_id, span_id, sampled = parsed
    # tracestate goes with traceparent, never with X-Ray; a bad one is dropped, the trace
    # still continues
    state = parse_tracestate(record.tracestate) if from_w3c else ""
    return RemoteParent(trace_id, span_id, sampled, state)
