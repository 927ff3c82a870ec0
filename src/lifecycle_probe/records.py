"""The model: small immutable records that capture builds and sinks translate.

Data flows one way: hooks and the decorator build these records, sinks read them. Nothing
here knows about OpenTelemetry, EMF or files.
"""

from __future__ import annotations

# The C module itself: operator.py would add its own import for nothing.
from _operator import itemgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lifecycle_probe.imports import ImportRecord


# -- immutable records without typing/collections/dataclasses ------------------------------
# Records are built on every invocation and on the INIT path, where importing
# ``dataclasses`` (~30 ms here) or ``typing`` (~15 ms) would cost more than the whole probe.
# A record is a tuple subclass whose fields are read through C-level ``itemgetter``
# properties: immutable, hashable, comparable and as cheap to build as a tuple.
def field(index: int) -> Any:
    """A read-only attribute reading item ``index`` of the record."""
    return property(itemgetter(index))


class Record(tuple[object, ...]):
    """Base of the immutable records: subclasses set ``_fields`` and declare ``field``s."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True)
        )
        return f"{type(self).__name__}({inner})"

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (nested records stay records)."""
        return dict(zip(self._fields, self, strict=True))

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed."""
        values = self.as_dict()
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        values.update(changes)
        return tuple.__new__(type(self), [values[name] for name in self._fields])


# Start types (DESIGN.md "Start types").
COLD = "cold"
WARM = "warm"
PROVISIONED = "provisioned"
PROACTIVE = "proactive"
RESTORED = "restored"
START_TYPES = (COLD, WARM, PROVISIONED, PROACTIVE, RESTORED)
# ``faas.coldstart`` is true exactly for these: the caller waited for INIT or a restore.
COLD_START_TYPES = frozenset({COLD, RESTORED})

# Names of the lifecycle events an invocation record can carry.
STALE_EVENT = "lifecycle.connection.stale"
LEAK_EVENT = "lifecycle.global.leak"
HAZARD_EVENT = "lifecycle.snapstart.hazard"
TMP_EVENT = "lifecycle.tmp.threshold"
MEMORY_EVENT = "lifecycle.memory.growth"

# Invocation outcomes.
OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"

# Where a timestamp came from. Exact sources first; ``estimated`` marks a fallback.
SOURCE_PROCESS = "process"  # INIT start: the runtime process's start time, from the OS
SOURCE_EXEC_WRAPPER = "exec-wrapper"  # INIT start handed over by the layer's exec wrapper
SOURCE_RESTORE = "restore"  # INIT start of a restored environment: the after-restore hook
SOURCE_RUNTIME = "runtime"  # INIT end: the runtime's first request for an event
SOURCE_SNAPSHOT = "snapshot"  # INIT end before a snapshot: the before-snapshot hook
SOURCE_HANDLER_IMPORT = "handler-import"  # INIT end: the handler module finished importing
SOURCE_ESTIMATED = "estimated"


class InitRecord(Record):
    """One INIT phase of one environment (or the restore of a SnapStart environment)."""

    __slots__ = ()
    _fields = (
        "environment_id",
        "init_type",
        "start_ns",
        "end_ns",
        "start_source",
        "end_source",
        "restored",
        "pid",
        "imports",
        "imports_traced_from_ns",
    )
    environment_id: str = field(0)
    init_type: str = field(1)
    start_ns: int = field(2)
    end_ns: int = field(3)
    start_source: str = field(4)
    end_source: str = field(5)
    restored: bool = field(6)
    pid: int = field(7)
    # The import tree of INIT, as far as the probe saw it: from ``imports_traced_from_ns``
    # (when import tracing began; None if it never did) to INIT end.
    imports: tuple[ImportRecord, ...] = field(8)
    imports_traced_from_ns: int | None = field(9)

    def __new__(
        cls,
        environment_id: str,
        init_type: str,
        start_ns: int,
        end_ns: int,
        start_source: str,
        end_source: str,
        restored: bool,
        pid: int,
        imports: tuple[ImportRecord, ...] = (),
        imports_traced_from_ns: int | None = None,
    ) -> InitRecord:
        return tuple.__new__(
            cls,
            (
                environment_id,
                init_type,
                start_ns,
                end_ns,
                start_source,
                end_source,
                restored,
                pid,
                imports,
                imports_traced_from_ns,
            ),
        )

    @property
    def duration_s(self) -> float:
        """INIT duration in seconds."""
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def estimated(self) -> bool:
        """True when either end of INIT had no exact signal and was estimated."""
        return SOURCE_ESTIMATED in (self.start_source, self.end_source)


class LifecycleFacts(Record):
    """What ``lifecycle_probe.current()`` returns: this environment and the invocation in flight.

    Outside an invocation ``start``, ``request_id`` and ``idle_s`` are ``None`` and
    ``invocation_seq`` counts the invocations started so far.
    """

    __slots__ = ()
    _fields = (
        "start",
        "invocation_seq",
        "environment_id",
        "init_type",
        "init_duration_s",
        "init_estimated",
        "idle_s",
        "environment_age_s",
        "request_id",
        "invoke_start_ns",
    )
    start: str | None = field(0)
    invocation_seq: int = field(1)
    environment_id: str = field(2)
    init_type: str = field(3)
    init_duration_s: float | None = field(4)
    init_estimated: bool = field(5)
    idle_s: float | None = field(6)
    environment_age_s: float = field(7)
    request_id: str | None = field(8)
    invoke_start_ns: int | None = field(9)

    def __new__(
        cls,
        start: str | None,
        invocation_seq: int,
        environment_id: str,
        init_type: str,
        init_duration_s: float | None,
        init_estimated: bool,
        idle_s: float | None,
        environment_age_s: float,
        request_id: str | None,
        invoke_start_ns: int | None,
    ) -> LifecycleFacts:
        return tuple.__new__(
            cls,
            (
                start,
                invocation_seq,
                environment_id,
                init_type,
                init_duration_s,
                init_estimated,
                idle_s,
                environment_age_s,
                request_id,
                invoke_start_ns,
            ),
        )

    @property
    def coldstart(self) -> bool:
        """``faas.coldstart``: true exactly for ``cold`` and ``restored`` starts."""
        return self.start in COLD_START_TYPES


class FunctionFacts(Record):
    """What Lambda tells every environment of a function through its variables."""

    __slots__ = ()
    _fields = (
        "function_name",
        "function_version",
        "memory_mb",
        "log_group",
        "log_stream",
        "region",
        "execution_env",
    )
    function_name: str | None = field(0)
    function_version: str | None = field(1)
    memory_mb: int | None = field(2)
    log_group: str | None = field(3)
    log_stream: str | None = field(4)
    region: str | None = field(5)
    execution_env: str | None = field(6)

    def __new__(
        cls,
        function_name: str | None,
        function_version: str | None,
        memory_mb: int | None,
        log_group: str | None,
        log_stream: str | None,
        region: str | None,
        execution_env: str | None,
    ) -> FunctionFacts:
        return tuple.__new__(
            cls,
            (
                function_name,
                function_version,
                memory_mb,
                log_group,
                log_stream,
                region,
                execution_env,
            ),
        )


class LifecycleEvent(Record):
    """Something that happened during an invocation (a stale connection, a leaked global)."""

    __slots__ = ()
    _fields = ("name", "time_ns", "attributes")
    name: str = field(0)
    time_ns: int = field(1)
    attributes: tuple[tuple[str, str | int | float | bool], ...] = field(2)

    def __new__(
        cls,
        name: str,
        time_ns: int,
        attributes: tuple[tuple[str, str | int | float | bool], ...] = (),
    ) -> LifecycleEvent:
        return tuple.__new__(cls, (name, time_ns, attributes))


class InvocationRecord(Record):
    """One finished invocation. The first one of an environment carries its ``init``."""

    __slots__ = ()
    _fields = (
        "facts",
        "end_ns",
        "outcome",
        "error_type",
        "init",
        "function",
        "invoked_function_arn",
        "events",
        "trigger",
        "xray_trace_header",
        "traceparent",
        "tracestate",
        "exception",
        "imports",
        "deadline_ns",
        "rss_bytes",
        "tmp_used_bytes",
        "tmp_growth_bytes",
    )
    facts: LifecycleFacts = field(0)
    end_ns: int = field(1)
    outcome: str = field(2)
    error_type: str | None = field(3)
    init: InitRecord | None = field(4)
    function: FunctionFacts = field(5)
    invoked_function_arn: str | None = field(6)
    events: tuple[LifecycleEvent, ...] = field(7)
    # faas.trigger, from the event's shape (triggers.py).
    trigger: str = field(8)
    # Incoming trace context, as received: X-Ray's _X_AMZN_TRACE_ID and the W3C headers of
    # an HTTP event. The OTel sink parses them; nothing else of the event is kept.
    xray_trace_header: str | None = field(9)
    traceparent: str | None = field(10)
    tracestate: str | None = field(11)
    # The exception the handler raised, for the span's exception event (None if it returned).
    exception: BaseException | None = field(12)
    # Modules first imported during this invocation.
    imports: tuple[ImportRecord, ...] = field(13)
    # When Lambda ends the invocation (from the context), bounding a flush before returning.
    deadline_ns: int | None = field(14)
    # Resident memory after the invocation (/proc/self/statm), bytes used in the temporary
    # directory at its end, and the change since the previous invocation of the
    # environment (None on its first): see resources.py.
    rss_bytes: int | None = field(15)
    tmp_used_bytes: int | None = field(16)
    tmp_growth_bytes: int | None = field(17)

    def __new__(
        cls,
        facts: LifecycleFacts,
        end_ns: int,
        outcome: str,
        error_type: str | None,
        init: InitRecord | None,
        function: FunctionFacts,
        invoked_function_arn: str | None,
        events: tuple[LifecycleEvent, ...] = (),
        trigger: str = "other",
        xray_trace_header: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        exception: BaseException | None = None,
        imports: tuple[ImportRecord, ...] = (),
        deadline_ns: int | None = None,
        rss_bytes: int | None = None,
        tmp_used_bytes: int | None = None,
        tmp_growth_bytes: int | None = None,
    ) -> InvocationRecord:
        return tuple.__new__(
            cls,
            (
                facts,
                end_ns,
                outcome,
                error_type,
                init,
                function,
                invoked_function_arn,
                events,
                trigger,
                xray_trace_header,
                traceparent,
                tracestate,
                exception,
                imports,
                deadline_ns,
                rss_bytes,
                tmp_used_bytes,
                tmp_growth_bytes,
            ),
        )

    @property
    def duration_s(self) -> float:
        """Handler duration in seconds, as the probe saw it."""
        start = self.facts.invoke_start_ns
        return 0.0 if start is None else (self.end_ns - start) / 1e9


class InitFailureRecord(Record):
    """An INIT that failed: the function's module could not be imported or raised.

    Exported on its own, before the runtime reports the error and exits. Only the error's
    type is kept: its message may quote a DSN, a path with a secret, or a line of code.
    """

    __slots__ = ()
    _fields = (
        "environment_id",
        "init_type",
        "start_ns",
        "end_ns",
        "start_source",
        "error_type",
        "function",
        "handler",
        "imports",
        "imports_traced_from_ns",
        "pid",
    )
    environment_id: str = field(0)
    init_type: str = field(1)
    start_ns: int = field(2)
    # When the failure reached the probe: the end of the failed INIT.
    end_ns: int = field(3)
    start_source: str = field(4)
    # The Lambda error type the runtime reports (``Runtime.ImportModuleError``, ...), or the
    # exception's qualified name for an exception raised by the function's own INIT code.
    error_type: str = field(5)
    function: FunctionFacts = field(6)
    # The function's handler setting (``module.function``), which names no secret.
    handler: str | None = field(7)
    # The imports of the failed INIT up to the failure, as the import tracer saw them.
    imports: tuple[ImportRecord, ...] = field(8)
    imports_traced_from_ns: int | None = field(9)
    pid: int = field(10)

    def __new__(
        cls,
        *,
        environment_id: str,
        init_type: str,
        start_ns: int,
        end_ns: int,
        start_source: str,
        error_type: str,
        function: FunctionFacts,
        handler: str | None = None,
        imports: tuple[ImportRecord, ...] = (),
        imports_traced_from_ns: int | None = None,
        pid: int = 0,
    ) -> InitFailureRecord:
        return tuple.__new__(
            cls,
            (
                environment_id,
                init_type,
                start_ns,
                end_ns,
                start_source,
                error_type,
                function,
                handler,
                imports,
                imports_traced_from_ns,
                pid,
            ),
        )

    @property
    def duration_s(self) -> float:
        """How long the failed INIT ran, in seconds."""
        return (self.end_ns - self.start_ns) / 1e9
