"""The model: small immutable records that capture builds and sinks translate.

Data flows one way: hooks and the decorator build these records, sinks read them. Nothing
here knows about OpenTelemetry, EMF or files, and nothing here imports capture code: the
names of the lifecycle's events and their outcomes live here, for both sides to use.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from typing_extensions import dataclass_transform

    from lifecycle_probe.rare_records import (
        InitDisagreement,
        PlatformFigures,
        RestoreRecord,
    )
else:
    # ``typing`` is for the type checker only (see below); at run time the marker is a no-op.
    def dataclass_transform(**_options: object) -> object:
        return lambda marked: marked


__all__ = [
    "COLD",
    "COLD_START_TYPES",
    "DETECTED",
    "ERROR",
    "FAILED",
    "HAZARD_EVENT",
    "LEAK_EVENT",
    "MAX_EVENTS",
    "MEMORY_EVENT",
    "OK",
    "ORIGIN_FUNCTION",
    "ORIGIN_LAYER",
    "ORIGIN_RUNTIME",
    "ORIGIN_SITE_PACKAGES",
    "OTHER_TRIGGER",
    "PLATFORM_REPORT_EVENT",
    "PROACTIVE",
    "PROVISIONED",
    "RESTORED",
    "RISK",
    "STALE_EVENT",
    "START_TYPES",
    "TIMEOUT",
    "TMP_EVENT",
    "WARM",
    "FunctionFacts",
    "ImportRecord",
    "InitRecord",
    "InvocationRecord",
    "LifecycleEvent",
    "LifecycleFacts",
    "Record",
]


# -- immutable records without typing/collections/dataclasses ------------------------------
# Records are built on every invocation and on the INIT path, where importing
# ``dataclasses`` (~30 ms here) or ``typing`` (~15 ms) would cost more than the whole probe.
# So a record class is made from its annotations (their names only, never evaluated) by
# the small metaclass below: the names become slots, a constructor taking them by keyword
# (or in order) is generated the first time the class is used (compiling one costs
# ~60 us: INIT pays nothing for a record it never builds), and assignment is refused.
# ``dataclass_transform`` tells the type checker the same story, so it checks the
# constructors' keywords and the fields' immutability as it would a frozen dataclass.
@dataclass_transform(frozen_default=True)
class _RecordType(type):
    """Makes a record class of its annotated fields (``name: type`` or ``name: type = default``).

    Every annotation a record class has at run time is a field: a class attribute is
    declared for the type checker only, under ``if TYPE_CHECKING:``, as ``Record`` does.
    """

    _fields: tuple[str, ...]
    _defaults: dict[str, object]

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _RecordType:
        # This runs for every record class at INIT, so it does as little as it can: every
        # annotation at run time is a field (``Record`` declares its class attributes for
        # the type checker only), and everything goes into the namespace before the class
        # exists (each attribute set on a made class invalidates the type cache).
        if len(bases) > 1:  # (a mixin's fields, or a second record's, would be lost)
            raise TypeError(f"record {name}: a record extends exactly one record")
        own = tuple(namespace.get("__annotations__", ()))
        base = bases[0] if bases else None  # (none: Record itself)
        inherited: tuple[str, ...] = getattr(base, "_fields", ())
        defaults: dict[str, object] = {}
        defaults.update(getattr(base, "_defaults", ()))
        # The fields with a default (found by a set operation, not a loop over every field:
        # InvocationRecord has 22): a default stays out of the class body, as a slot cannot
        # share its name.
        for field in namespace.keys() & own:
            defaults[field] = namespace.pop(field)
        fields = inherited + own
        namespace["__slots__"] = own
        # Each record class compiles its own constructor when first used (a subclass must
        # not inherit its base's, which knows only the base's fields).
        namespace.setdefault("__init__", _construct_first)
        namespace["_fields"] = fields
        namespace["_defaults"] = defaults
        return super().__new__(mcs, name, bases, namespace)


def _construct_first(self: Record, *args: Any, **values: Any) -> None:
    """The first record of its class: compile the class's constructor, use it from now on."""
    cls = type(self)
    constructor = _constructor(cls)
    type.__setattr__(cls, "__init__", constructor)
    constructor(self, *args, **values)


def _constructor(cls: type[Record]) -> Any:
    """Compile ``cls.__init__``: its fields as parameters, in order, each stored once."""
    namespace: dict[str, Any] = {}
    parameters = []
    for field in cls._fields:
        # The slot's own setter: the record refuses ordinary assignment.
        namespace[f"_set_{field}"] = getattr(cls, field).__set__
        if field in cls._defaults:
            namespace[f"_default_{field}"] = cls._defaults[field]
            parameters.append(f"{field}=_default_{field}")
        else:
            parameters.append(field)
    lines = [f"def __init__(self, {', '.join(parameters)}):"]
    lines += [f"    _set_{field}(self, {field})" for field in cls._fields] or ["    pass"]
    exec("\n".join(lines), namespace)  # the source is made of field names only
    constructor = namespace["__init__"]
    constructor.__qualname__ = f"{cls.__name__}.__init__"
    return constructor


class Record(metaclass=_RecordType):
    """Base of the immutable records: subclasses declare their fields as annotations."""

    __slots__ = ()
    if TYPE_CHECKING:  # made by the metaclass; at run time every annotation is a field
        _fields: ClassVar[tuple[str, ...]]
        _defaults: ClassVar[dict[str, object]]

    # AttributeError, as a read-only attribute raises: an exception class of its own would
    # cost INIT about as much as two record classes, for what the message says anyway.
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__}.{name}: records are immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__}.{name}: records are immutable")

    def _values(self) -> tuple[Any, ...]:
        # The fields' values, in order (equality, hash, pickle, copies). Python, not a
        # C-level operator.attrgetter: records are compared, hashed and copied rarely
        # (a Config per ``@probe``, the first invocation's INIT record), and ``_operator``
        # would be one more import at INIT.
        return tuple([getattr(self, name) for name in self._fields])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy would otherwise set the slots through the refused assignment.
        return type(self), self._values()

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({inner})"

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (nested records stay records)."""
        return dict(zip(self._fields, self._values(), strict=True))

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed."""
        # The fields themselves: a subclass's as_dict() may add what is not one.
        values = dict(zip(self._fields, self._values(), strict=True))
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        values.update(changes)
        return type(self)(**values)


# Start types (DESIGN.md "Start types").
COLD = "cold"
WARM = "warm"
PROVISIONED = "provisioned"
PROACTIVE = "proactive"
RESTORED = "restored"
START_TYPES = (COLD, WARM, PROVISIONED, PROACTIVE, RESTORED)
# ``faas.coldstart`` is true exactly for these: the caller waited for INIT or a restore.
COLD_START_TYPES = frozenset({COLD, RESTORED})

# Names of the lifecycle events an invocation record can carry (DESIGN.md "Spans").
STALE_EVENT = "lifecycle.connection.stale"
LEAK_EVENT = "lifecycle.global.leak"
HAZARD_EVENT = "lifecycle.snapstart.hazard"
TMP_EVENT = "lifecycle.tmp.threshold"
MEMORY_EVENT = "lifecycle.memory.growth"
# Lambda's own figures of one request (Telemetry API), on the span of the export they reach.
PLATFORM_REPORT_EVENT = "lifecycle.platform.report"

# The attributes of those events that sinks count by.
CONNECTION_OUTCOME = "lifecycle.connection.outcome"
HAZARD_KIND = "lifecycle.snapstart.hazard.kind"

# How the reuse of a connection after a freeze went (``lifecycle.connection.outcome``):
# it failed; the driver replaced the dead connection quietly; or it worked, but after an
# idle time long enough to be a risk.
FAILED = "failed"
DETECTED = "detected"
RISK = "risk"

# ``faas.trigger`` of an event whose shape tells nothing (the others: triggers.py), and of
# every event where no sink reads the event (EMF and the log lines never do).
OTHER_TRIGGER = "other"

# Invocation outcomes.
OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"

# Where a timestamp came from. Exact sources first; ``estimated`` marks a fallback.
SOURCE_PROCESS = "process"  # INIT start: the runtime process's start time, from the OS
SOURCE_EXEC_WRAPPER = "exec-wrapper"  # INIT start handed over by the layer's exec wrapper
SOURCE_RESTORE = "restore"  # restore start of a SnapStart environment: the after-restore hook
SOURCE_RUNTIME = "runtime"  # INIT end: the runtime's first request for an event
SOURCE_SNAPSHOT = "snapshot"  # INIT end before a snapshot: the before-snapshot hook
SOURCE_HANDLER_IMPORT = "handler-import"  # INIT end: the handler module finished importing
SOURCE_ESTIMATED = "estimated"

# Where an imported module came from (DESIGN.md: ``lifecycle.import.origin``).
ORIGIN_RUNTIME = "runtime"
ORIGIN_LAYER = "layer"
ORIGIN_FUNCTION = "function"
ORIGIN_SITE_PACKAGES = "site-packages"


class ImportRecord(Record):
    """One module import: when, how long in all and by itself, nested under which import."""

    module: str
    start_ns: int
    end_ns: int
    self_ns: int
    import_id: int
    parent_id: int | None
    origin: str
    during_init: bool
    error_type: str | None = None

    @property
    def duration_s(self) -> float:
        """Cumulative time of the import, nested imports included."""
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def self_s(self) -> float:
        """Time of the import without the imports nested in it."""
        return self.self_ns / 1e9


class InitRecord(Record):
    """One INIT phase of one environment. For a SnapStart environment (``restored``), the
    INIT that ran before the snapshot, as the snapshot's memory kept it; the restore has
    its own :class:`RestoreRecord`."""

    environment_id: str
    init_type: str
    start_ns: int
    end_ns: int
    start_source: str
    end_source: str
    restored: bool
    pid: int
    # The import tree of INIT, as far as the probe saw it: from ``imports_traced_from_ns``
    # (when import tracing began; None if it never did) to INIT end.
    imports: tuple[ImportRecord, ...] = ()
    imports_traced_from_ns: int | None = None

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

    A frozen object with named fields (not a tuple). Outside an invocation ``start``,
    ``request_id``, ``idle_s`` and ``invoke_start_ns`` are ``None`` and ``invocation_seq``
    counts the invocations started so far.
    """

    start: str | None
    invocation_seq: int
    environment_id: str
    init_type: str
    init_duration_s: float | None
    init_estimated: bool
    idle_s: float | None
    environment_age_s: float
    request_id: str | None
    invoke_start_ns: int | None

    @property
    def coldstart(self) -> bool:
        """``faas.coldstart``: true exactly for ``cold`` and ``restored`` starts."""
        return self.start in COLD_START_TYPES

    def as_dict(self) -> dict[str, Any]:
        """The facts as a plain dict, ``coldstart`` included after ``start``: a derived
        property, but one of the facts a user logs (README lists it among them)."""
        values = super().as_dict()
        return {"start": values.pop("start"), "coldstart": self.coldstart, **values}

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self.as_dict().items())
        return f"{type(self).__name__}({inner})"


class FunctionFacts(Record):
    """What Lambda tells every environment of a function through its variables."""

    function_name: str | None
    function_version: str | None
    memory_mb: int | None
    log_group: str | None
    log_stream: str | None
    region: str | None
    execution_env: str | None


# Events one invocation record carries at most: a loop reusing a dead connection must not
# grow memory without bound (and a reader of the records may rely on the bound).
MAX_EVENTS = 100


class LifecycleEvent(Record):
    """Something that happened during an invocation (a stale connection, a leaked global)."""

    name: str
    time_ns: int
    attributes: tuple[tuple[str, str | int | float | bool], ...] = ()


class InvocationRecord(Record):
    """One finished invocation. The first one of an environment carries its ``init``."""

    facts: LifecycleFacts
    end_ns: int
    outcome: str
    error_type: str | None
    init: InitRecord | None
    function: FunctionFacts
    invoked_function_arn: str | None
    events: tuple[LifecycleEvent, ...] = ()
    # faas.trigger, from the event's shape (triggers.py).
    trigger: str = OTHER_TRIGGER
    # Incoming trace context, as received: X-Ray's _X_AMZN_TRACE_ID and the W3C headers of
    # an HTTP event. The OTel sink parses them; nothing else of the event is kept.
    xray_trace_header: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    # The exception the handler raised, for the span's exception event (None if it returned).
    exception: BaseException | None = None
    # Modules first imported during this invocation.
    imports: tuple[ImportRecord, ...] = ()
    # When Lambda ends the invocation (from the context), bounding a flush before returning.
    deadline_ns: int | None = None
    # Resident memory after the invocation (/proc/self/statm), bytes used in the temporary
    # directory at its end, and the change since the previous invocation of the
    # environment (None on its first): see resources.py.
    rss_bytes: int | None = None
    tmp_used_bytes: int | None = None
    tmp_growth_bytes: int | None = None
    # The SnapStart restore, on the first invocation after it (``init`` is then the INIT
    # from before the snapshot).
    restore: RestoreRecord | None = None
    # Lambda's own figures (Telemetry API) that arrived since the previous export, each
    # naming the request it belongs to (usually the previous one), and the INIT figures
    # among them that disagree with the probe's.
    platform: tuple[PlatformFigures, ...] = ()
    init_disagreements: tuple[InitDisagreement, ...] = ()
    # Lambda's reports given up since the previous export, unexported (more of them
    # waited than the listener keeps): counted in the export that carries the figures.
    platform_evicted: int = 0

    @property
    def duration_s(self) -> float:
        """Handler duration in seconds, as the probe saw it."""
        start = self.facts.invoke_start_ns
        return 0.0 if start is None else (self.end_ns - start) / 1e9
