"""Reading what the probe exported, one line at a time, into :mod:`.records`.

Sources: OTLP JSON lines (``otlp-file``, or an OpenTelemetry Collector's file exporter;
gzip too), CloudWatch EMF documents, the probe's JSON log lines (``init_report``,
``stale_connection``, ``timeout``, ``init_failure``, ``global_leak``) and the ``console``
exporter's lines, alone or inside a log export (a timestamp or a Lambda log prefix before
the JSON is skipped). Lines that are none of these (START/END/REPORT lines, the
function's own logs) are ignored; lines that are the probe's but cannot be read (cut off,
not JSON, a field of the wrong type) are counted as malformed, never raised.

A SnapStart environment's INIT is its restore (``lambda.restore``, EMF
``RestoreDuration``, the INIT report's ``restore_duration_ms``, the console's ``restore``
line): that is what its start
cost. The INIT before the snapshot, which the probe exports with every environment
restored from it (``lambda.init`` with ``lifecycle.restored``), ran once, when the version
was published: it is no restored environment's INIT, and read as one it would count once
per restore. It is skipped, with the import spans under it. Lambda's own restore figure
(the ``lifecycle.platform.report`` span event's ``lifecycle.platform.restore_duration_ms``,
EMF ``PlatformRestoreDuration``, the console's ``platform`` line), when the export has
it, is the restore's whole cost (the probe's restore starts only once the snapshot is
loaded), and the summary prefers it.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from lifecycle_probe.records import MAX_EVENTS
from lifecycle_probe.report.records import (
    HAZARD_EVENT,
    LEAK_EVENT,
    PLATFORM_REPORT_EVENT,
    STALE_EVENT,
    Event,
    Import,
    Init,
    Invocation,
    Record,
)

__all__ = ["Malformed", "ReadStats", "Reader"]

# Keys that mark a JSON object as something the probe (or a collector) wrote.
_OTLP_SPANS = '"resourceSpans"'
_OTLP_METRICS = '"resourceMetrics"'
_OTLP_LOGS = '"resourceLogs"'
_MARKERS = (_OTLP_SPANS, _OTLP_METRICS, _OTLP_LOGS, '"lifecycle_probe"', '"_aws"')
# Import spans waiting for the span that names their environment (a collector may batch a
# trace's spans into different lines): at most this many traces are kept waiting.
_PENDING_TRACES = 10_000
# The longest line read, newline included; a longer one is skipped unread (never held
# whole: a small gzip can expand to one line of gigabytes) and counted as malformed. The
# probe's longest are its OTLP exports, at most MAX_WAITING_SPANS (2,048) spans: about
# 3 MB when each carries an event; a Collector's file exporter writes a batch per line,
# 8,192 spans by default, so about 12 MB. Parsing a line takes 6 to 30 times its length.
MAX_LINE_CHARS = 32 * 2**20
# OTLP's times and integers are 64-bit: beyond is not a figure of the probe's.
_MAX_INT = 2**63 - 1
# Every number the probe writes as a float is a duration (in s or ms; a year is 3.2e10
# ms) or a count: one beyond this is not the probe's, and would overflow the arithmetic.
_MAX_FIGURE = 1e15
# Import chains deeper than this (a cycle, in a hostile file) name no function import.
_MAX_IMPORT_DEPTH = 200


class Malformed(ValueError):
    """A line of the probe's that cannot be read."""


@dataclass
class ReadStats:
    """What reading saw: lines, what was used, what was not and why."""

    lines: int = 0
    records: int = 0
    ignored: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    unattributed_imports: int = 0
    sources: list[str] = field(default_factory=list)
    # Files that could not be opened or read at all ("path: reason"): skipped.
    unreadable: list[str] = field(default_factory=list)

    def note_malformed(self, where: str, reason: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < 5:
            self.malformed_examples.append(f"{where}: {reason}")


def _attribute_value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    # (unchecked here: each value the report reads is checked where it is read, _float's
    # range keeping out a "NaN" or "Infinity" doubleValue)
    if "intValue" in value:
        return int(value["intValue"])  # OTLP JSON writes 64-bit integers as strings
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_attribute_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def otlp_attributes(item: dict[str, Any]) -> dict[str, Any]:
    """An OTLP JSON span's (event's, resource's) attributes as a plain dict."""
    return {a["key"]: _attribute_value(a.get("value") or {}) for a in item.get("attributes", ())}


def _int(value: Any, what: str, minimum: int = 0, maximum: int = _MAX_INT) -> int:
    """``value`` (a number, or its digits) as an integer in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Malformed(f"{what}: not a number: {type(value).__name__}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise Malformed(f"{what} out of range")
    return number


def _ns(value: Any) -> int | None:
    return None if value in (None, "", 0, "0") else _int(value, "time")


def _seq_value(value: Any) -> int:
    return _int(value, "invocation_seq")


def _float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"not a number: {type(value).__name__}")
    if not abs(value) <= _MAX_FIGURE:  # (false for NaN too)
        raise Malformed("number out of range")
    return float(value)


def _str(value: Any) -> str | None:
    if isinstance(value, dict | list):
        raise Malformed(f"not a string: {type(value).__name__}")
    return None if value is None else str(value)


def _scalar(key: str, value: Any) -> Any:
    """An event attribute's value: the summary keys and labels events by them, so each is
    a string, a boolean or a number in range (the probe writes no other)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return _int(value, key, -_MAX_INT)
    if isinstance(value, float):
        return _float(value)
    raise Malformed(f"{key}: not a string or number: {type(value).__name__}")


def _event(
    environment: str,
    name: str,
    attributes: dict[str, Any],
    seq: int | None,
    time_ns: int | None,
) -> Event:
    checked = {key: _scalar(key, value) for key, value in attributes.items()}
    return Event(environment, name, checked, seq, time_ns)


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are no JSON and no figure of the probe's: they would reach the
    # report's JSON, which must stay JSON.
    raise ValueError(f"{name} is not a number")


# (1e999, read as infinity, is out of every range the figures are checked against)
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _lines(stream: IO[str]) -> Iterator[str | None]:
    """The stream's lines, None for one longer than MAX_LINE_CHARS (read past in pieces)."""
    while line := stream.readline(MAX_LINE_CHARS + 1):
        if len(line) <= MAX_LINE_CHARS:
            yield line
            continue
        while line and not line.endswith("\n"):
            line = stream.readline(MAX_LINE_CHARS)
        yield None


def _timestamp_ns(text: Any) -> int | None:
    """``2026-11-30T15:39:24.123Z`` (the probe's log lines) as nanoseconds."""
    if not isinstance(text, str) or not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(when.timestamp() * 1000) * 1_000_000


def _emf_value(document: dict[str, Any], name: str) -> float | None:
    value = document.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return _float(value)


def _emf_count(document: dict[str, Any], name: str) -> int:
    """An EMF count of one invocation's events: the probe keeps at most MAX_EVENTS."""
    return _int(_emf_value(document, name) or 0, name, 0, MAX_EVENTS)


class Reader:
    """Turns lines into records; one reader per report (it joins spans across lines)."""

    def __init__(self) -> None:
        self.stats = ReadStats()
        # trace id -> environment, for the traces that carry an INIT or an invocation,
        # bounded: only import spans need it, and they come with or just after their trace.
        self._trace_environment: OrderedDict[str, str] = OrderedDict()
        self._pending: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    # -- sources ---------------------------------------------------------------------------

    def read_paths(self, paths: Iterable[str]) -> Iterator[Record]:
        """Records of every file (``-``: standard input; a folder: every file in it)."""
        for path in paths:
            if path == "-":
                self.stats.sources.append("<stdin>")
                yield from self.read_lines(_lines(sys.stdin), "<stdin>")
                continue
            target = Path(path)
            files = (
                sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
            )
            for file in files:
                try:
                    stream = _open(file)
                except OSError as exc:
                    # (/proc/self/mem, a file without read permission): the rest is read
                    self.stats.unreadable.append(f"{file}: {exc.strerror or exc}")
                    continue
                self.stats.sources.append(str(file))
                with stream:
                    yield from self.read_lines(_lines(stream), str(file))

    def read_lines(self, lines: Iterable[str | None], where: str) -> Iterator[Record]:
        """Records of each line; a compressed stream cut short counts as one malformed line,
        as does a line longer than MAX_LINE_CHARS (None: see _lines)."""
        number = 0
        try:
            for number, line in enumerate(lines, 1):
                if line is None or len(line) > MAX_LINE_CHARS:
                    self.stats.lines += 1
                    self.stats.note_malformed(
                        f"{where}:{number}", f"longer than {MAX_LINE_CHARS} characters"
                    )
                    continue
                yield from self.read_line(line, f"{where}:{number}")
        except (EOFError, OSError, zlib.error, UnicodeDecodeError) as exc:
            self.stats.note_malformed(f"{where}:{number + 1}", f"unreadable ({exc})")

    def read_line(self, line: str, where: str = "line") -> Iterator[Record]:
        """The records of one line (none for a line that is not the probe's)."""
        self.stats.lines += 1
        start = line.find("{")
        if start < 0:
            self.stats.ignored += 1
            return
        text = line[start:].rstrip()
        if not any(marker in text for marker in _MARKERS):
            self.stats.ignored += 1
            return
        # Metrics repeat what the spans say, and logs are not the probe's: skip unparsed.
        if _OTLP_SPANS not in text and (_OTLP_METRICS in text or _OTLP_LOGS in text):
            self.stats.ignored += 1
            return
        try:
            value = _JSON.decode(text)
        except (ValueError, RecursionError) as exc:  # (RecursionError: nested too deep)
            self.stats.note_malformed(where, f"not JSON ({str(exc)[:60]})")
            return
        if not isinstance(value, dict):
            self.stats.ignored += 1
            return
        try:
            records = self._records(value)
        except (
            KeyError,
            TypeError,
            ValueError,  # Malformed too
            AttributeError,
            OverflowError,
            RecursionError,
        ) as exc:
            self.stats.note_malformed(where, f"{type(exc).__name__}: {str(exc)[:60]}")
            return
        if records is None:
            self.stats.ignored += 1
            return
        self.stats.records += len(records)
        yield from records

    def _records(self, value: dict[str, Any]) -> list[Record] | None:
        if "resourceSpans" in value:
            return self._otlp(value["resourceSpans"])
        kind = value.get("lifecycle_probe")
        if "_aws" in value and kind == "metrics":
            return _emf(value)
        if kind in _LOG_LINES:
            return _LOG_LINES[kind](value)
        return None

    # -- OTLP ------------------------------------------------------------------------------

    def _otlp(self, resource_spans: list[dict[str, Any]]) -> list[Record]:
        records: list[Record] = []
        imports: list[dict[str, Any]] = []
        # Span ids of the INIT before a snapshot and of the imports under it (see above).
        snapshot_spans: set[Any] = set()
        for resource in resource_spans:
            function = otlp_attributes(resource.get("resource") or {}).get("faas.name")
            for scope in resource.get("scopeSpans", ()):
                for span in scope.get("spans", ()):
                    name = span.get("name")
                    if name == "lambda.import":
                        imports.append(span)
                        continue
                    attributes = otlp_attributes(span)
                    if name == "lambda.init" and attributes.get("lifecycle.restored"):
                        snapshot_spans.add(span.get("spanId"))
                        continue
                    if name in ("lambda.init", "lambda.restore"):
                        records.append(_otlp_init(span, attributes, function))
                    elif "lifecycle.start" in attributes:
                        invocation = _otlp_invocation(span, attributes, function)
                        records.append(invocation)
                        records.extend(_otlp_platform_restores(span, invocation))
                    else:
                        continue
                    imports.extend(self._remember_trace(span.get("traceId"), attributes))
        # The import spans by id: an import's ancestors name the function's own import
        # that pulled it in (advice names what the function can move, not a module deep in
        # a library's tree).
        by_id = {sid: span for span in imports if isinstance(sid := span.get("spanId"), str)}
        for span in imports:
            # (an import's span comes after its parent's: they are written by start time)
            if snapshot_spans and span.get("parentSpanId") in snapshot_spans:
                snapshot_spans.add(span.get("spanId"))
                continue
            self._attribute_import(span, records, by_id)
        return records

    def _remember_trace(self, trace_id: Any, attributes: dict[str, Any]) -> list[dict[str, Any]]:
        """Note the trace's environment; the import spans that were waiting for it."""
        environment = attributes.get("lifecycle.environment.id")
        if not trace_id or not environment:
            raise Malformed("span without lifecycle.environment.id")
        self._trace_environment[trace_id] = str(environment)
        if len(self._trace_environment) > _PENDING_TRACES:
            self._trace_environment.popitem(last=False)
        # Import spans that came before their trace's INIT or invocation span.
        return self._pending.pop(trace_id, [])

    def _attribute_import(
        self, span: dict[str, Any], records: list[Record], by_id: dict[str, dict[str, Any]]
    ) -> None:
        trace_id = str(span.get("traceId") or "")
        environment = self._trace_environment.get(trace_id)
        if environment is None:
            waiting = self._pending.setdefault(trace_id, [])
            waiting.append(span)
            if len(self._pending) > _PENDING_TRACES:
                _, dropped = self._pending.popitem(last=False)
                self.stats.unattributed_imports += len(dropped)
            return
        records.append(_otlp_import(span, environment, by_id))

    def finish(self) -> None:
        """Count the import spans whose trace never named an environment."""
        self.stats.unattributed_imports += sum(len(v) for v in self._pending.values())
        self._pending.clear()


def _otlp_init(span: dict[str, Any], attributes: dict[str, Any], function: Any) -> Init:
    start_ns, end_ns = _ns(span.get("startTimeUnixNano")), _ns(span.get("endTimeUnixNano"))
    if start_ns is None or end_ns is None:
        raise Malformed("lambda.init without start or end")
    failed = bool(attributes.get("lifecycle.init.failed"))
    restore = span.get("name") == "lambda.restore"
    return Init(
        environment=str(attributes["lifecycle.environment.id"]),
        init_type="snap-start" if restore else _str(attributes.get("lifecycle.init_type")),
        duration_s=max(0.0, (end_ns - start_ns) / 1e9),
        start_ns=start_ns,
        end_ns=end_ns,
        failed=failed,
        error_type=_str(attributes.get("error.type")) if failed else None,
        function=_str(function),
        restore=restore,
    )


def _otlp_invocation(span: dict[str, Any], attributes: dict[str, Any], function: Any) -> Invocation:
    environment = str(attributes["lifecycle.environment.id"])
    seq = _seq_value(attributes["lifecycle.invocation_seq"])
    error_type = None
    events: list[Event] = []
    for item in span.get("events", ()):
        name = item.get("name")
        if name == "exception":
            error_type = _str(otlp_attributes(item).get("exception.type"))
        elif name in (STALE_EVENT, LEAK_EVENT, HAZARD_EVENT):
            events.append(
                _event(environment, name, otlp_attributes(item), seq, _ns(item.get("timeUnixNano")))
            )
    outcome = str(attributes.get("lifecycle.outcome") or "ok")
    if error_type is None and outcome == "error":
        error_type = _str((span.get("status") or {}).get("message"))
    return Invocation(
        environment=environment,
        seq=seq,
        start=str(attributes["lifecycle.start"]),
        outcome=outcome,
        start_ns=_ns(span.get("startTimeUnixNano")),
        end_ns=_ns(span.get("endTimeUnixNano")),
        idle_s=_float(attributes.get("lifecycle.idle_s")),
        init_type=_str(attributes.get("lifecycle.init_type")),
        function=_str(attributes.get("faas.name") or function),
        error_type=error_type,
        events=events,
    )


def _otlp_platform_restores(span: dict[str, Any], invocation: Invocation) -> list[Record]:
    """Lambda's restore figures among the span's ``lifecycle.platform.report`` events.

    They reach an export of the same process, so of the same (restored) environment: the
    first request after its restore is this one or an earlier one of it."""
    found: list[Record] = []
    for item in span.get("events", ()):
        if item.get("name") != PLATFORM_REPORT_EVENT:
            continue
        restore_ms = _float(otlp_attributes(item).get("lifecycle.platform.restore_duration_ms"))
        if restore_ms is not None and restore_ms >= 0:
            found.append(_lambda_restore(invocation.environment, restore_ms, invocation.function))
    return found


def _lambda_restore(environment: str, restore_ms: float, function: str | None) -> Init:
    return Init(
        environment,
        "snap-start",
        restore_ms / 1000,
        function=function,
        restore=True,
        source="lambda",
    )


def _otlp_import(
    span: dict[str, Any], environment: str, by_id: dict[str, dict[str, Any]]
) -> Import:
    attributes = otlp_attributes(span)
    self_s = _float(attributes.get("lifecycle.import.self_s"))
    if self_s is None:
        raise Malformed("lambda.import without lifecycle.import.self_s")
    return Import(
        environment=environment,
        module=str(attributes["code.namespace"]),
        self_s=self_s,
        origin=_str(attributes.get("lifecycle.import.origin")),
        after_init=bool(attributes.get("lifecycle.import.after_init")),
        start_ns=_ns(span.get("startTimeUnixNano")),
        end_ns=_ns(span.get("endTimeUnixNano")),
        imported_by=_imported_by(span, by_id),
    )


def _imported_by(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> str | None:
    """The import the function's own code made that led to ``span``'s: the span itself or
    its nearest ancestor whose parent is a module of the function's, or else the top of
    its tree. A top-level import is the function's: with ``@probe``, tracing begins inside
    the handler module's import, so what that module imports has no import span above it.
    None for a tree whose top is the runtime's own (the standard library, awslambdaric)."""
    node = span
    for _ in range(_MAX_IMPORT_DEPTH):
        parent_id = node.get("parentSpanId")
        parent = by_id.get(parent_id) if isinstance(parent_id, str) else None
        if parent is None:
            attributes = otlp_attributes(node)
            if attributes.get("lifecycle.import.origin") == "runtime":
                return None
            return _str(attributes.get("code.namespace"))
        if otlp_attributes(parent).get("lifecycle.import.origin") == "function":
            return _str(otlp_attributes(node).get("code.namespace"))
        node = parent
    return None  # deeper than any real import chain, or a cycle: nothing to say


# -- EMF and the probe's log lines --------------------------------------------------------


def _emf(document: dict[str, Any]) -> list[Record]:
    environment = document.get("lifecycle_environment_id")
    if not environment:
        raise Malformed("EMF document without lifecycle_environment_id")
    environment = str(environment)
    end_ms = document["_aws"].get("Timestamp")
    end_ns = None if end_ms is None else _int(end_ms, "Timestamp", 0, _MAX_INT // 10**6) * 10**6
    function = _str(document.get("function_name"))
    init_type = _str(document.get("lifecycle_init_type"))
    if _emf_value(document, "InitErrors"):
        return [
            Init(
                environment,
                init_type,
                0.0,
                end_ns=end_ns,
                failed=True,
                error_type=_str(document.get("error_type")),
                function=function,
            )
        ]
    seq = _seq_value(document["lifecycle_invocation_seq"])
    invoke_ms = _emf_value(document, "InvokeDuration")
    start_ns = None if end_ns is None or invoke_ms is None else end_ns - int(invoke_ms * 1e6)
    idle_ms = _emf_value(document, "IdleDuration")
    invocation = Invocation(
        environment=environment,
        seq=seq,
        start=str(document["lifecycle_start"]),
        outcome=str(document.get("lifecycle_outcome") or "ok"),
        start_ns=start_ns,
        end_ns=end_ns,
        idle_s=None if idle_ms is None else idle_ms / 1000,
        init_type=init_type,
        function=function,
    )
    records: list[Record] = []
    # A restored environment's start is its restore (see above).
    init_ms = _emf_value(document, "RestoreDuration")
    restore = init_ms is not None
    if init_ms is None:
        init_ms = _emf_value(document, "InitDuration")
    if init_ms is not None:
        # EMF has INIT's duration only: its end is placed at the invocation's start.
        records.append(
            Init(
                environment,
                init_type,
                init_ms / 1000,
                end_ns=start_ns,
                function=function,
                restore=restore,
            )
        )
    lambda_restore_ms = _emf_value(document, "PlatformRestoreDuration")
    if lambda_restore_ms is not None and lambda_restore_ms >= 0:
        records.append(_lambda_restore(environment, lambda_restore_ms, function))
    # The stale-connection and leak counts are kept for sources with no line of their own:
    # one event per count, so each count is bounded by what one invocation record can carry.
    counts = {
        outcome: _emf_count(document, metric)
        for outcome, metric in (
            ("failed", "StaleConnectionFailed"),
            ("detected", "StaleConnectionDetected"),
            ("risk", "StaleConnectionRisk"),
        )
    }
    for outcome, count in counts.items():
        for _ in range(count):
            invocation.events.append(
                Event(
                    environment,
                    STALE_EVENT,
                    {"lifecycle.connection.outcome": outcome, "emf": True},
                    seq,
                    end_ns,
                )
            )
    for _ in range(_emf_count(document, "GlobalLeaks")):
        invocation.events.append(Event(environment, LEAK_EVENT, {"emf": True}, seq, end_ns))
    records.append(invocation)
    return records


def _line_environment(line: dict[str, Any]) -> str:
    environment = line.get("lifecycle_environment_id") or line.get("environment_id")
    if not environment:
        raise Malformed("log line without an environment id")
    return str(environment)


def _seq(line: dict[str, Any]) -> int | None:
    value = line.get("lifecycle_invocation_seq")
    return None if value is None else _seq_value(value)


def _init_report(line: dict[str, Any]) -> list[Record]:
    environment = _line_environment(line)
    # A restored environment's start is its restore (see above).
    restore_ms = _float(line.get("restore_duration_ms"))
    duration_ms = _float(line["init_duration_ms"]) if restore_ms is None else restore_ms
    assert duration_ms is not None
    end_ns = _timestamp_ns(line.get("timestamp"))
    records: list[Record] = [
        Init(
            environment,
            _str(line.get("init_type")),
            duration_ms / 1000,
            start_ns=None if end_ns is None else end_ns - int(duration_ms * 1e6),
            end_ns=end_ns,
            function=_str(line.get("function_name")),
            restore=restore_ms is not None,
        )
    ]
    # (after a restore, the slowest imports are the snapshot's INIT's: not this environment's)
    for item in () if restore_ms is not None else line.get("slowest_imports") or ():
        self_ms = _float(item["self_ms"])
        assert self_ms is not None
        records.append(Import(environment, str(item["module"]), self_ms / 1000))
    return records


def _init_failure(line: dict[str, Any]) -> list[Record]:
    environment = _line_environment(line)
    duration_ms = _float(line.get("init_duration_ms")) or 0.0
    return [
        Init(
            environment,
            _str(line.get("init_type")),
            duration_ms / 1000,
            end_ns=_timestamp_ns(line.get("timestamp")),
            failed=True,
            error_type=_str(line.get("error_type")),
            function=_str(line.get("function_name")),
        )
    ]


def _prefixed_attributes(line: dict[str, Any], prefix: str, into: str) -> dict[str, Any]:
    return {into + k[len(prefix) :]: v for k, v in line.items() if k.startswith(prefix)}


def _stale_line(line: dict[str, Any]) -> list[Record]:
    attributes = _prefixed_attributes(line, "connection_", "lifecycle.connection.")
    for key, name in (
        ("db_system", "db.system"),
        ("server_address", "server.address"),
        ("server_port", "server.port"),
    ):
        if key in line:
            attributes[name] = line[key]
    if "lifecycle.connection.outcome" not in attributes:
        raise Malformed("stale_connection line without connection_outcome")
    return [
        _event(
            _line_environment(line),
            STALE_EVENT,
            attributes,
            _seq(line),
            _timestamp_ns(line.get("timestamp")),
        )
    ]


def _leak_line(line: dict[str, Any]) -> list[Record]:
    # The span event's attribute names, "." as "_" (the stale_connection line's convention),
    # or shortened with a ``global_`` prefix.
    attributes = {
        "code.namespace": line.get("code_namespace") or line.get("global_module"),
        "lifecycle.global.name": line.get("lifecycle_global_name") or line.get("global_name"),
        "lifecycle.global.first_seen_seq": line.get("lifecycle_global_first_seen_seq")
        or line.get("global_first_seen_seq"),
    }
    return [
        _event(
            _line_environment(line),
            LEAK_EVENT,
            {k: v for k, v in attributes.items() if v is not None},
            _seq(line),
            _timestamp_ns(line.get("timestamp")),
        )
    ]


def _timeout_line(line: dict[str, Any]) -> list[Record]:
    duration_ms = _float(line.get("duration_ms"))
    end_ns = _timestamp_ns(line.get("timestamp"))
    start_ns = None if end_ns is None or duration_ms is None else end_ns - int(duration_ms * 1e6)
    seq = _seq(line)
    if seq is None:
        raise Malformed("timeout line without lifecycle_invocation_seq")
    return [
        Invocation(
            _line_environment(line),
            seq,
            str(line.get("lifecycle_start") or "warm"),
            "timeout",
            start_ns,
            end_ns,
            function=_str(line.get("function_name")),
            error_type="Sandbox.Timedout",
        )
    ]


def _console_init(line: dict[str, Any]) -> list[Record]:
    if line.get("restored"):
        return []  # the INIT before a snapshot (see above): the restore line is the start
    start_ns, end_ns = _ns(line.get("start_ns")), _ns(line.get("end_ns"))
    duration = _float(line.get("duration_s"))
    if duration is None:
        raise Malformed("init line without duration_s")
    failed = line.get("failed") is True
    return [
        Init(
            _line_environment(line),
            _str(line.get("init_type")),
            duration,
            start_ns,
            end_ns,
            failed=failed,
            error_type=_str(line.get("error_type")) if failed else None,
            function=_str(line.get("function_name")),
        )
    ]


def _console_restore(line: dict[str, Any]) -> list[Record]:
    duration = _float(line.get("duration_s"))
    if duration is None:
        raise Malformed("restore line without duration_s")
    return [
        Init(
            _line_environment(line),
            "snap-start",
            duration,
            _ns(line.get("start_ns")),
            _ns(line.get("end_ns")),
            restore=True,
        )
    ]


def _console_platform(line: dict[str, Any]) -> list[Record]:
    # Lambda's figures of one request: of them, the report reads the restore's.
    restore_ms = _float(line.get("restore_duration_ms"))
    if restore_ms is None or restore_ms < 0:
        return []
    return [_lambda_restore(_line_environment(line), restore_ms, None)]


def _console_invocation(line: dict[str, Any]) -> list[Record]:
    return [
        Invocation(
            environment=_line_environment(line),
            seq=_seq_value(line["invocation_seq"]),
            start=str(line["start"]),
            outcome=str(line.get("outcome") or "ok"),
            start_ns=_ns(line.get("start_ns")),
            end_ns=_ns(line.get("end_ns")),
            idle_s=_float(line.get("idle_s")),
            init_type=_str(line.get("init_type")),
            function=_str(line.get("function_name")),
            error_type=_str(line.get("error_type")),
        )
    ]


def _console_event(line: dict[str, Any]) -> list[Record]:
    name = str(line["name"])
    if name not in (STALE_EVENT, LEAK_EVENT, HAZARD_EVENT):
        return []
    skip = {"lifecycle_probe", "name", "time_ns", "environment_id", "request_id"}
    attributes = {k: v for k, v in line.items() if k not in skip}
    seq = line.get("invocation_seq")
    return [
        _event(
            _line_environment(line),
            name,
            attributes,
            None if seq is None else _seq_value(seq),
            _ns(line.get("time_ns")),
        )
    ]


_LOG_LINES = {
    "init_report": _init_report,
    "init_failure": _init_failure,
    "stale_connection": _stale_line,
    "global_leak": _leak_line,
    "timeout": _timeout_line,
    "init": _console_init,
    "restore": _console_restore,
    "platform": _console_platform,
    "invocation": _console_invocation,
    "event": _console_event,
}


def _open(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")
