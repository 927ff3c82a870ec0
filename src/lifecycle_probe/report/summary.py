"""The report's figures, accumulated one record at a time.

Memory grows with the number of environments (and modules), never with the number of
invocations: per environment a bitmap of the sequence numbers seen (one bit per
invocation, to drop the same invocation read from two sources; in pieces of
``SEEN_CHUNK`` numbers, kept only where a number was seen), a bounded list of
timeline segments and markers; percentiles come from :class:`Distribution`, exact up to
``EXACT_VALUES`` values and log-bucketed (0.5 % wide) beyond.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lifecycle_probe.report.records import (
    HAZARD_EVENT,
    LEAK_EVENT,
    STALE_EVENT,
    Event,
    Import,
    Init,
    Invocation,
    Record,
)

__all__ = [
    "COLD_START_TYPES",
    "START_TYPES",
    "Distribution",
    "EnvironmentState",
    "Marker",
    "Segment",
    "StaleGroup",
    "Summary",
]

START_TYPES = ("cold", "warm", "provisioned", "proactive", "restored")
COLD_START_TYPES = ("cold", "restored")
EXACT_VALUES = 20_000
SLOWEST_IMPORTS = 10
# Timeline: at most this many drawn segments and markers per environment.
SEGMENTS_PER_ENVIRONMENT = 48
MARKERS_PER_ENVIRONMENT = 24
_BUCKET_RATIO = math.log(1.005)
# Sequence numbers per piece of an environment's bitmap of those seen: a piece exists
# only where some number was seen, so one absurd number (10**10) costs one piece, not a
# bitmap up to it.
SEEN_CHUNK = 4096


class Distribution:
    """Values for percentiles (nearest rank): exact while few, log buckets when many."""

    __slots__ = ("_buckets", "_values", "count", "maximum", "total")

    def __init__(self) -> None:
        self._values: list[float] | None = []
        self._buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.maximum: float | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if self.maximum is None or value > self.maximum:
            self.maximum = value
        if self._values is not None:
            self._values.append(value)
            if len(self._values) > EXACT_VALUES:
                for kept in self._values:
                    self._buckets[_bucket(kept)] += 1
                self._values = None
        else:
            self._buckets[_bucket(value)] += 1

    def percentile(self, q: float) -> float | None:
        """The value at rank ceil(q/100 * count) (None when empty)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        if self._values is not None:
            self._values.sort()
            return self._values[rank - 1]
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return min(_bucket_value(bucket), self.maximum or 0.0)
        return self.maximum


def _bucket(value: float) -> int:
    return -(10**6) if value <= 1e-9 else math.floor(math.log(value) / _BUCKET_RATIO)


def _bucket_value(bucket: int) -> float:
    return 0.0 if bucket == -(10**6) else math.exp((bucket + 0.5) * _BUCKET_RATIO)


@dataclass(slots=True)
class Segment:
    """Invocations drawn as one bar: one invocation, or several merged when too many."""

    start_ns: int
    end_ns: int
    count: int
    starts: dict[str, int]
    errors: int = 0
    timeouts: int = 0
    first_seq: int = 0
    last_seq: int = 0
    busy_ns: int = 0  # time spent in the invocations (the rest of the bar was frozen)


@dataclass(slots=True)
class Marker:
    kind: str  # stale, leak, hazard, error, timeout
    time_ns: int
    label: str


@dataclass(slots=True)
class EnvironmentState:
    """Everything kept about one environment."""

    id: str
    function: str | None = None
    init: Init | None = None
    failure: Init | None = None
    # Lambda's own restore duration, when the export had it (see start_cost).
    lambda_restore: Init | None = None
    invocations: int = 0
    first_start: str | None = None
    first_ns: int | None = None
    last_ns: int | None = None
    errors: int = 0
    timeouts: int = 0
    idle_max_s: float = 0.0
    idle_total_s: float = 0.0
    seen: dict[int, bytearray] = field(default_factory=dict)
    init_imports: dict[str, Import] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    markers_dropped: int = 0
    probe_events: set[str] = field(default_factory=set)

    def saw(self, seq: int) -> bool:
        """Whether invocation ``seq`` was counted already (and mark it counted)."""
        if seq < 0:
            return False
        piece, offset = divmod(seq, SEEN_CHUNK)
        seen = self.seen.get(piece)
        if seen is None:
            seen = self.seen[piece] = bytearray(SEEN_CHUNK // 8)
        byte, bit = divmod(offset, 8)
        if seen[byte] >> bit & 1:
            return True
        seen[byte] |= 1 << bit
        return False

    def add_segment(self, invocation: Invocation, start_ns: int, end_ns: int) -> None:
        segment = Segment(
            start_ns,
            end_ns,
            1,
            {invocation.start: 1},
            invocation.outcome == "error",
            invocation.outcome == "timeout",
            invocation.seq,
            invocation.seq,
            end_ns - start_ns,
        )
        self.segments.append(segment)
        if len(self.segments) > SEGMENTS_PER_ENVIRONMENT:
            self._merge_segments()

    def _merge_segments(self) -> None:
        """Halve the segments by merging neighbours in time (aggregate what cannot be drawn)."""
        ordered = sorted(self.segments, key=lambda s: s.start_ns)
        merged: list[Segment] = []
        for index in range(0, len(ordered), 2):
            pair = ordered[index : index + 2]
            first = pair[0]
            if len(pair) == 2:
                second = pair[1]
                starts = dict(first.starts)
                for start, count in second.starts.items():
                    starts[start] = starts.get(start, 0) + count
                first = Segment(
                    first.start_ns,
                    max(first.end_ns, second.end_ns),
                    first.count + second.count,
                    starts,
                    first.errors + second.errors,
                    first.timeouts + second.timeouts,
                    min(first.first_seq, second.first_seq),
                    max(first.last_seq, second.last_seq),
                    first.busy_ns + second.busy_ns,
                )
            merged.append(first)
        self.segments = merged

    def add_marker(self, kind: str, time_ns: int | None, label: str) -> None:
        if time_ns is None:
            return
        if len(self.markers) >= MARKERS_PER_ENVIRONMENT:
            self.markers_dropped += 1
            return
        self.markers.append(Marker(kind, time_ns, label))


def stale_client(attributes: dict[str, Any]) -> str:
    """What a stale connection was to: its ``db.system``, else its server address."""
    system = attributes.get("db.system")
    if system:
        return str(system)
    address = attributes.get("server.address")
    port = attributes.get("server.port")
    if address:
        return f"{address}:{port}" if port is not None else str(address)
    client = attributes.get("lifecycle.connection.client")
    return str(client) if client else "unknown"


@dataclass
class StaleGroup:
    """Stale connections of one client."""

    outcomes: Counter[str] = field(default_factory=Counter)
    dead_idle: Distribution = field(default_factory=Distribution)  # failed or detected
    risk_idle: Distribution = field(default_factory=Distribution)
    reconnect_s: Distribution = field(default_factory=Distribution)
    created_in_invocation: int = 0
    environments: set[str] = field(default_factory=set)


class Summary:
    """Accumulates records; :meth:`to_json` gives the report's stable keys."""

    def __init__(self) -> None:
        self.environments: dict[str, EnvironmentState] = {}
        self.invocations = 0
        self.duplicates = 0
        self.starts: Counter[str] = Counter()
        self.errors = 0
        self.timeouts = 0
        self.error_types: Counter[str] = Counter()
        self.idle = Distribution()
        self.invoke_duration = Distribution()
        self.module_self_s: dict[str, dict[str, float]] = {}
        self.module_origin: dict[str, str] = {}
        # The function's own import that led to each module's (OTLP only; see reader).
        self.module_imported_by: dict[str, str] = {}
        # Modules imported during invocations: imports per environment.
        self.after_init_imports: dict[str, Counter[str]] = {}
        self.stale: dict[str, StaleGroup] = {}
        self.leaks: dict[tuple[str, str], dict[str, Any]] = {}
        self.hazards: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._event_keys: set[tuple[Any, ...]] = set()
        self._emf_events: list[Event] = []
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    # -- accumulation ----------------------------------------------------------------------

    def add_all(self, records: Iterable[Record]) -> Summary:
        for record in records:
            self.add(record)
        return self

    def add(self, record: Record) -> None:
        if isinstance(record, Invocation):
            self._invocation(record)
        elif isinstance(record, Init):
            self._init(record)
        elif isinstance(record, Import):
            self._import(record)
        else:
            self._event(record)

    def environment(self, environment: str) -> EnvironmentState:
        state = self.environments.get(environment)
        if state is None:
            state = self.environments[environment] = EnvironmentState(environment)
        return state

    def _span(self, start_ns: int | None, end_ns: int | None) -> None:
        for value in (start_ns, end_ns):
            if value is None:
                continue
            if self.first_ns is None or value < self.first_ns:
                self.first_ns = value
            if self.last_ns is None or value > self.last_ns:
                self.last_ns = value

    def _invocation(self, invocation: Invocation) -> None:
        state = self.environment(invocation.environment)
        if state.saw(invocation.seq):
            self.duplicates += 1
            return
        self.invocations += 1
        state.invocations += 1
        state.function = state.function or invocation.function
        self.starts[invocation.start] += 1
        if invocation.seq == 1:
            state.first_start = invocation.start
        if invocation.idle_s is not None:
            self.idle.add(invocation.idle_s)
            state.idle_total_s += invocation.idle_s
            state.idle_max_s = max(state.idle_max_s, invocation.idle_s)
        start_ns, end_ns = invocation.start_ns, invocation.end_ns
        if start_ns is None and end_ns is not None:
            start_ns = end_ns
        if end_ns is None:
            end_ns = start_ns
        if start_ns is not None and end_ns is not None:
            self._span(start_ns, end_ns)
            state.first_ns = start_ns if state.first_ns is None else min(state.first_ns, start_ns)
            state.last_ns = end_ns if state.last_ns is None else max(state.last_ns, end_ns)
            state.add_segment(invocation, start_ns, end_ns)
        duration = invocation.duration_s
        if duration is not None:
            self.invoke_duration.add(duration)
        if invocation.outcome == "error":
            self.errors += 1
            state.errors += 1
            self.error_types[invocation.error_type or "unknown"] += 1
            state.add_marker("error", end_ns, f"error: {invocation.error_type or 'unknown'}")
        elif invocation.outcome == "timeout":
            self.timeouts += 1
            state.timeouts += 1
            state.add_marker("timeout", end_ns, f"timeout (invocation {invocation.seq})")
        for event in invocation.events:
            self._event(event)

    def _init(self, init: Init) -> None:
        state = self.environment(init.environment)
        state.function = state.function or init.function
        if init.failed:
            if state.failure is None or (state.failure.error_type is None and init.error_type):
                state.failure = init
            return
        if init.source == "lambda":
            state.lambda_restore = init
            return
        # Keep the most complete record of the INIT (an OTLP span has its start; EMF not).
        if state.init is None or (state.init.start_ns is None and init.start_ns is not None):
            state.init = init
            self._span(init.start_ns, init.end_ns)

    def _import(self, record: Import) -> None:
        if record.after_init:
            # First-invocation imports: what the handler loads lazily.
            self.after_init_imports.setdefault(record.module, Counter())[record.environment] += 1
            return
        per_environment = self.module_self_s.setdefault(record.module, {})
        per_environment[record.environment] = record.self_s
        if record.origin:
            self.module_origin[record.module] = record.origin
        if record.imported_by:
            self.module_imported_by[record.module] = record.imported_by
        state = self.environment(record.environment)
        known = state.init_imports.get(record.module)
        if known is None or (known.start_ns is None and record.start_ns is not None):
            state.init_imports[record.module] = record

    def _event(self, event: Event) -> None:
        state = self.environment(event.environment)
        if event.attributes.get("emf"):
            # EMF counts only: used at the end where no line of the probe's said more.
            self._emf_events.append(event)
            return
        attributes = event.attributes
        time_ms = None if event.time_ns is None else event.time_ns // 1_000_000
        key = (
            event.environment,
            event.name,
            time_ms,
            stale_client(attributes),
            attributes.get("lifecycle.connection.outcome"),
            attributes.get("code.namespace"),
            attributes.get("lifecycle.global.name"),
        )
        if key in self._event_keys:
            return
        if len(self._event_keys) < 1_000_000:
            self._event_keys.add(key)
        state.probe_events.add(event.name)
        self._count_event(state, event)

    def _count_event(self, state: EnvironmentState, event: Event) -> None:
        attributes = event.attributes
        if event.name == STALE_EVENT:
            client = stale_client(attributes)
            group = self.stale.setdefault(client, StaleGroup())
            outcome = str(attributes.get("lifecycle.connection.outcome") or "unknown")
            group.outcomes[outcome] += 1
            group.environments.add(event.environment)
            idle = attributes.get("lifecycle.connection.idle_s")
            if isinstance(idle, int | float):
                (group.risk_idle if outcome == "risk" else group.dead_idle).add(float(idle))
            reconnect = attributes.get("lifecycle.connection.reconnect_s")
            if isinstance(reconnect, int | float):
                group.reconnect_s.add(float(reconnect))
            if str(attributes.get("lifecycle.connection.created_in", "")).startswith("invocation"):
                group.created_in_invocation += 1
            idle_text = f", idle {idle:.2f} s" if isinstance(idle, int | float) else ""
            state.add_marker(
                "stale", event.time_ns, f"stale connection to {client}: {outcome}{idle_text}"
            )
        elif event.name == LEAK_EVENT:
            module = str(attributes.get("code.namespace") or "?")
            name = str(attributes.get("lifecycle.global.name") or "?")
            leak = self.leaks.setdefault(
                (module, name), {"environments": set(), "count": 0, "first_seen_seq": None}
            )
            leak["environments"].add(event.environment)
            leak["count"] += 1
            seen = attributes.get("lifecycle.global.first_seen_seq")
            if isinstance(seen, int) and (
                leak["first_seen_seq"] is None or seen < leak["first_seen_seq"]
            ):
                leak["first_seen_seq"] = seen
            state.add_marker("leak", event.time_ns, f"leaked global {module}.{name}")
        elif event.name == HAZARD_EVENT:
            module = str(attributes.get("code.namespace") or "?")
            name = str(attributes.get("lifecycle.global.name") or "?")
            kind = str(attributes.get("lifecycle.snapstart.hazard.kind") or "unknown")
            hazard = self.hazards.setdefault(
                (module, name, kind), {"environments": set(), "count": 0}
            )
            hazard["environments"].add(event.environment)
            hazard["count"] += 1
            state.add_marker("hazard", event.time_ns, f"SnapStart hazard ({kind}) {module}.{name}")

    def finish(self) -> Summary:
        """Fold in what only EMF counted (environments with no line of the probe's)."""
        for event in self._emf_events:
            state = self.environment(event.environment)
            if event.name in state.probe_events:
                continue
            if event.name == STALE_EVENT:
                outcome = str(event.attributes["lifecycle.connection.outcome"])
                group = self.stale.setdefault("unknown", StaleGroup())
                group.outcomes[outcome] += 1
                group.environments.add(event.environment)
                state.add_marker("stale", event.time_ns, f"stale connection: {outcome}")
            else:
                self._count_event(
                    state,
                    Event(event.environment, event.name, {}, event.invocation_seq, event.time_ns),
                )
        self._emf_events.clear()
        return self

    # -- results ---------------------------------------------------------------------------

    @property
    def served(self) -> list[EnvironmentState]:
        """Environments that served at least one invocation or finished INIT."""
        return [s for s in self.environments.values() if s.invocations or s.init is not None]

    @property
    def init_failures(self) -> int:
        return sum(1 for s in self.environments.values() if s.failure is not None)

    @property
    def cold_start_ratio(self) -> float | None:
        if not self.invocations:
            return None
        return sum(self.starts[s] for s in COLD_START_TYPES) / self.invocations

    def start_costs(self) -> list[Init]:
        """Each environment's start: its INIT, or after a SnapStart restore the restore,
        Lambda's figure when the export had it (the probe's restore starts only once the
        snapshot is loaded), else the probe's."""
        costs = []
        for state in self.environments.values():
            if state.lambda_restore is not None and (state.init is None or state.init.restore):
                costs.append(state.lambda_restore)
            elif state.init is not None:
                costs.append(state.init)
        return costs

    def init_durations(self) -> Distribution:
        """The start costs' durations (an INIT's, or a restore's: see start_costs)."""
        durations = Distribution()
        for cost in self.start_costs():
            durations.add(cost.duration_s)
        return durations

    def start_cost_kinds(self) -> dict[str, int]:
        """How many environments' start is which figure (README "The report")."""
        kinds = Counter(
            "init" if not cost.restore else f"restore_{cost.source}" for cost in self.start_costs()
        )
        return {kind: kinds[kind] for kind in ("init", "restore_lambda", "restore_probe")}

    def slowest_imports(self, count: int = SLOWEST_IMPORTS) -> list[dict[str, Any]]:
        ranked: list[dict[str, Any]] = []
        for module, per_environment in self.module_self_s.items():
            values = Distribution()
            for value in per_environment.values():
                values.add(value)
            p50 = values.percentile(50) or 0.0
            ranked.append({"module": module, "p50_s": round(p50, 6), "environments": values.count})
        ranked.sort(key=lambda item: (-item["p50_s"], item["module"]))
        return ranked[:count]

    def reuse(self) -> dict[str, Any]:
        counts = Distribution()
        per_environment: dict[str, int] = {}
        for state in sorted(self.environments.values(), key=lambda s: (-s.invocations, s.id)):
            if state.invocations:
                counts.add(state.invocations)
                per_environment[state.id] = state.invocations
        return {
            "max": None if counts.maximum is None else int(counts.maximum),
            "p50": counts.percentile(50),
            "per_environment": per_environment,
        }

    def stale_connections(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {"client": client, "outcome": outcome, "count": count}
            for client, group in self.stale.items()
            for outcome, count in group.outcomes.items()
        ]
        rows.sort(key=lambda r: (-r["count"], r["client"], r["outcome"]))
        return rows

    def global_leaks(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {
                "module": module,
                "name": name,
                "environments": len(leak["environments"]),
                "count": leak["count"],
                "first_seen_seq": leak["first_seen_seq"],
            }
            for (module, name), leak in self.leaks.items()
        ]
        rows.sort(key=lambda r: (-r["environments"], r["module"], r["name"]))
        return rows

    def to_json(self) -> dict[str, Any]:
        """The report as one object with the documented keys (README "The report")."""
        from lifecycle_probe.report.advice import advise

        init = self.init_durations()
        ratio = self.cold_start_ratio
        return {
            "invocations": self.invocations,
            "environments": len(self.served),
            "starts": {start: self.starts[start] for start in _ordered_starts(self.starts)},
            "cold_start_ratio": None if ratio is None else round(ratio, 6),
            "init_duration_s": {
                "p50": _round(init.percentile(50)),
                "p90": _round(init.percentile(90)),
                "p99": _round(init.percentile(99)),
                "max": _round(init.maximum),
            },
            "start_cost": self.start_cost_kinds(),
            "slowest_imports": self.slowest_imports(),
            "reuse": self.reuse(),
            "idle_s": {
                "p50": _round(self.idle.percentile(50)),
                "p99": _round(self.idle.percentile(99)),
            },
            "stale_connections": self.stale_connections(),
            "global_leaks": self.global_leaks(),
            "init_failures": self.init_failures,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "advice": [item.to_json() for item in advise(self)],
        }


def _ordered_starts(starts: Counter[str]) -> list[str]:
    known = [s for s in START_TYPES if starts[s]]
    return known + sorted(s for s in starts if s not in START_TYPES and starts[s])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def start_cost_title(report: dict[str, Any]) -> str:
    """What ``init_duration_s`` measures, in words: INIT, restore (whose figure), or both."""
    kinds = report.get("start_cost") or {}
    inits = kinds.get("init", 0)
    by_lambda, by_probe = kinds.get("restore_lambda", 0), kinds.get("restore_probe", 0)
    if not by_lambda and not by_probe:
        return "INIT duration"
    whose = (
        "Lambda's figure"
        if not by_probe
        else "the probe's figure, from its after-restore hook: Lambda's is longer"
        if not by_lambda
        else f"Lambda's figure for {by_lambda}, the probe's for {by_probe}"
    )
    if not inits:
        return f"SnapStart restore duration ({whose})"
    return f"start duration ({inits} INIT, {by_lambda + by_probe} SnapStart restores: {whose})"
