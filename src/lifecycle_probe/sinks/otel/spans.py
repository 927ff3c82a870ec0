"""Invocation records to finished OpenTelemetry spans, built from the recorded timestamps.

Every span here is over before it is built: the invocation, INIT and the imports all
ended before the record reached the sink. So the spans are made as the SDK's finished
``ReadableSpan`` objects directly, for the OTLP exporters to encode, without a tracer,
span processors or a context to activate: that machinery is for spans still running, and
it cost several times the rest of the export.

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

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from lifecycle_probe.records import COLD_START_TYPES, ERROR, TIMEOUT
from lifecycle_probe.sinks.otel.trace_context import parse_traceparent, parse_xray

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from lifecycle_probe.imports import ImportRecord
    from lifecycle_probe.records import InitFailureRecord, InitRecord, InvocationRecord

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_TIMED_OUT = Status(StatusCode.ERROR, "timeout")


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
    return _random_id(64)


def _trace_id() -> int:
    return _random_id(128)


def env_sampler() -> Sampler | None:
    """The sampler ``OTEL_TRACES_SAMPLER`` names, or None: then every invocation is kept."""
    if not os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    from opentelemetry.sdk.trace import TracerProvider

    # The provider reads OTEL_TRACES_SAMPLER(_ARG) the way every OTel SDK user expects.
    return TracerProvider(shutdown_on_exit=False).sampler


class Spans:
    """Builds the spans of one invocation record."""

    def __init__(
        self,
        resource: Resource,
        scope: InstrumentationScope,
        import_min_ns: int,
        sampler: Sampler | None = None,
    ) -> None:
        self._resource = resource
        self._scope = scope
        self._import_min_ns = import_min_ns
        self._sampler = sampler

    def of(self, record: InvocationRecord) -> tuple[list[ReadableSpan], tuple[int, int, bool]]:
        """The record's spans (none when a sampler drops it) and (trace id, invocation span
        id, sampled) for the metrics' exemplars."""
        parent = remote_parent(record)
        trace_id = parent.trace_id if parent is not None else _trace_id()
        span_id = _span_id()
        name = record.function.function_name or "lambda.invoke"
        attributes = invocation_attributes(record)
        trace_state = parent.trace_state if parent is not None else TraceState()
        if self._sampler is not None:
            # An empty Context, not None: None would make a parent-based sampler look at
            # whatever span is current on this thread, unrelated to the invocation.
            sampling_context = Context()
            if parent is not None:
                sampling_context = set_span_in_context(NonRecordingSpan(parent), Context())
            result = self._sampler.should_sample(
                sampling_context, trace_id, name, SpanKind.SERVER, attributes
            )
            if result.decision is not Decision.RECORD_AND_SAMPLE:
                return [], (trace_id, span_id, False)
            # As the SDK does: the sampler's attributes and trace state are the span's.
            attributes = dict(result.attributes or {})
            if result.trace_state is not None:
                trace_state = result.trace_state
        context = SpanContext(trace_id, span_id, False, _SAMPLED, trace_state)
        spans = [self._invocation_span(record, name, context, parent, attributes)]
        if record.init is not None:
            self._init_spans(record.init, context, spans)
        if record.imports:
            self._import_spans(record.imports, context, spans)
        return spans, (trace_id, span_id, True)

    def of_init_failure(self, failure: InitFailureRecord) -> list[ReadableSpan]:
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
        context = SpanContext(_trace_id(), _span_id(), False, _SAMPLED, TraceState())
        spans = [
            self._span(
                "lambda.init",
                context,
                None,
                attributes,
                failure.start_ns,
                failure.end_ns,
                status=Status(StatusCode.ERROR, failure.error_type),
            )
        ]
        self._import_spans(failure.imports, context, spans)
        return spans

    def _span(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        start_ns: int,
        end_ns: int,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        status: Status = _UNSET,
        events: Sequence[Event] = (),
    ) -> ReadableSpan:
        return ReadableSpan(
            name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            events=events,
            kind=kind,
            status=status,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=self._scope,
        )

    def _child_context(self, parent: SpanContext) -> SpanContext:
        return SpanContext(parent.trace_id, _span_id(), False, _SAMPLED, parent.trace_state)

    def _invocation_span(
        self,
        record: InvocationRecord,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
    ) -> ReadableSpan:
        events = [
            Event(event.name, dict(event.attributes), event.time_ns) for event in record.events
        ]
        status = _UNSET
        if record.outcome == ERROR:
            if record.exception is not None:
                events.append(exception_event(record.exception, record.end_ns))
            status = Status(StatusCode.ERROR, record.error_type)
        elif record.outcome == TIMEOUT:
            status = _TIMED_OUT
        return self._span(
            name,
            context,
            parent,
            attributes,
            # Facts always carry the start when the invocation went through the probe.
            record.facts.invoke_start_ns or record.end_ns,
            record.end_ns,
            kind=SpanKind.SERVER,
            status=status,
            events=events,
        )

    def _init_spans(self, init: InitRecord, parent: SpanContext, spans: list[ReadableSpan]) -> None:
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
        context = self._child_context(parent)
        spans.append(
            self._span("lambda.init", context, parent, attributes, init.start_ns, init.end_ns)
        )
        self._import_spans(init.imports, context, spans)

    def _import_spans(
        self, imports: Sequence[ImportRecord], parent: SpanContext, spans: list[ReadableSpan]
    ) -> None:
        kept: dict[int, SpanContext] = {}
        by_id = {record.import_id: record for record in imports}
        for record in sorted(imports, key=lambda r: r.start_ns):
            if record.end_ns - record.start_ns < self._import_min_ns:
                continue
            # The nearest ancestor with a span of its own, else INIT (or the invocation).
            ancestor = record.parent_id
            above_context = parent
            while ancestor is not None:
                if ancestor in kept:
                    above_context = kept[ancestor]
                    break
                above = by_id.get(ancestor)
                ancestor = None if above is None else above.parent_id
            attributes: dict[str, Any] = {
                "code.namespace": record.module,
                "lifecycle.import.self_s": record.self_s,
                "lifecycle.import.origin": record.origin,
            }
            if not record.during_init:
                attributes["lifecycle.import.after_init"] = True
            status = _UNSET
            if record.error_type is not None:
                status = Status(StatusCode.ERROR, record.error_type)
            context = self._child_context(above_context)
            spans.append(
                self._span(
                    "lambda.import",
                    context,
                    above_context,
                    attributes,
                    record.start_ns,
                    record.end_ns,
                    status=status,
                )
            )
            kept[record.import_id] = context


def exception_event(exc: BaseException, time_ns: int) -> Event:
    """The ``exception`` event of OTel's semantic conventions, without the message: messages
    carry payload values (KeyError('alice@example.com'), f"bad token {token}") and nothing
    of the payload may reach telemetry."""
    kind = type(exc)
    module, qualname = kind.__module__, kind.__qualname__
    return Event(
        "exception",
        {
            "exception.type": f"{module}.{qualname}" if module != "builtins" else qualname,
            "exception.message": "",
            "exception.stacktrace": _stack_without_message(exc),
        },
        time_ns,
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
    arn = record.invoked_function_arn
    if arn:
        attributes["cloud.resource_id"] = arn
        account = _account_of(arn)
        if account is not None:
            attributes["cloud.account.id"] = account
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


def _account_of(arn: str | None) -> str | None:
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    if not arn:
        return None
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 and parts[4] else None


def remote_parent(record: InvocationRecord) -> SpanContext | None:
    """The incoming trace context: W3C headers of an HTTP event first, then X-Ray's."""
    parsed = parse_traceparent(record.traceparent)
    from_w3c = parsed is not None
    if parsed is None:
        parsed = parse_xray(record.xray_trace_header)
    if parsed is None:
        return None
    trace_id, span_id, sampled = parsed
    state = TraceState()
    if from_w3c and record.tracestate:  # tracestate goes with traceparent, never with X-Ray
        try:
            state = TraceState.from_header([record.tracestate])
        except Exception:  # a bad tracestate is dropped, the trace still continues
            state = TraceState()
    return SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        trace_state=state,
    )
