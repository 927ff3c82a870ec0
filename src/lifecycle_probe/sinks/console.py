"""The ``console`` sink: one JSON line per record on standard error.

A failed INIT is one ``init`` line with ``failed`` and the error's type. An invocation's
lines, each there only when the record has it: its environment's ``init``
(first invocation), the SnapStart ``restore`` (first invocation after one), the
``invocation`` itself, its lifecycle ``event`` lines, one ``platform`` line per request
whose figures Lambda reported (Telemetry API) since the previous export, and an
``init_disagreement`` when Lambda's INIT figure and the probe's differ.

On Lambda, standard error goes to the function's CloudWatch log stream, so this sink is
also a zero-dependency way to read the lifecycle with CloudWatch Logs Insights.
"""

from __future__ import annotations

import sys

from lifecycle_probe.probe_threads import probe_work
from lifecycle_probe.sinks import Sink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

    from lifecycle_probe.rare_records import (
        InitDisagreement,
        InitFailureRecord,
        PlatformFigures,
        RestoreRecord,
    )
    from lifecycle_probe.records import InitRecord, InvocationRecord, LifecycleEvent

__all__ = ["ConsoleSink", "read_lines"]

# Every line starts with this key, so the probe's lines are easy to pick out of a log.
RECORD_KEY = "lifecycle_probe"
# Lambda's figures of a request, in its own units, as a platform line names them.
_PLATFORM_FIGURES = (
    "duration_ms",
    "billed_duration_ms",
    "max_memory_used_mb",
    "init_duration_ms",
    "restore_duration_ms",
)


def init_line(init: InitRecord) -> dict[str, Any]:
    """The JSON object written for an INIT record."""
    return {
        RECORD_KEY: "init",
        "environment_id": init.environment_id,
        "init_type": init.init_type,
        "start_ns": init.start_ns,
        "end_ns": init.end_ns,
        "duration_s": round(init.duration_s, 6),
        "start_source": init.start_source,
        "end_source": init.end_source,
        "estimated": init.estimated,
        "restored": init.restored,
        "pid": init.pid,
    }


def init_failure_line(failure: InitFailureRecord) -> dict[str, Any]:
    """The JSON object written for a failed INIT: an ``init`` line that says so, with the
    error's type only (its message may quote a secret)."""
    return {
        RECORD_KEY: "init",
        "environment_id": failure.environment_id,
        "init_type": failure.init_type,
        "start_ns": failure.start_ns,
        "end_ns": failure.end_ns,
        "duration_s": round(failure.duration_s, 6),
        "start_source": failure.start_source,
        "failed": True,
        "error_type": failure.error_type,
        "handler": failure.handler,
        "function_name": failure.function.function_name,
        "pid": failure.pid,
    }


def restore_line(restore: RestoreRecord) -> dict[str, Any]:
    """The JSON object written for a SnapStart restore, as the probe measured it."""
    return {
        RECORD_KEY: "restore",
        "environment_id": restore.environment_id,
        "start_ns": restore.start_ns,
        "end_ns": restore.end_ns,
        "duration_s": round(restore.duration_s, 6),
        "end_source": restore.end_source,
        "pid": restore.pid,
    }


def platform_line(figures: PlatformFigures, environment_id: str) -> dict[str, Any]:
    """The JSON object written for Lambda's figures of one request (``request_id``: the
    request they are of, usually the previous invocation), the figures Lambda gave only."""
    line: dict[str, Any] = {
        RECORD_KEY: "platform",
        "environment_id": environment_id,
        "request_id": figures.request_id,
    }
    for name in _PLATFORM_FIGURES:
        value = getattr(figures, name)
        if value is not None:
            line[name] = value
    return line


def init_disagreement_line(disagreement: InitDisagreement, environment_id: str) -> dict[str, Any]:
    """The JSON object written when Lambda's INIT figure for ``request_id`` and the
    probe's differ by more than the agreement tolerance."""
    return {
        RECORD_KEY: "init_disagreement",
        "environment_id": environment_id,
        "request_id": disagreement.request_id,
        "lambda_init_duration_ms": disagreement.lambda_init_duration_ms,
        "probe_init_duration_ms": disagreement.probe_init_duration_ms,
    }


def invocation_line(record: InvocationRecord) -> dict[str, Any]:
    """The JSON object written for an invocation record."""
    facts = record.facts
    function = record.function
    return {
        RECORD_KEY: "invocation",
        "start": facts.start,
        "coldstart": facts.coldstart,
        "invocation_seq": facts.invocation_seq,
        "environment_id": facts.environment_id,
        "request_id": facts.request_id,
        "init_type": facts.init_type,
        "init_duration_s": facts.init_duration_s,
        "init_estimated": facts.init_estimated,
        "idle_s": facts.idle_s,
        "environment_age_s": round(facts.environment_age_s, 6),
        "start_ns": facts.invoke_start_ns,
        "end_ns": record.end_ns,
        "duration_s": round(record.duration_s, 6),
        "outcome": record.outcome,
        "error_type": record.error_type,
        "function_name": function.function_name,
        "function_version": function.function_version,
        "log_stream": function.log_stream,
    }


def event_line(
    event: LifecycleEvent, environment_id: str, request_id: str | None
) -> dict[str, Any]:
    """The JSON object written for a lifecycle event."""
    line: dict[str, Any] = {
        RECORD_KEY: "event",
        "name": event.name,
        "time_ns": event.time_ns,
        "environment_id": environment_id,
        "request_id": request_id,
    }
    line.update(event.attributes)
    return line


class ConsoleSink(Sink):
    """Writes each record as one JSON line to ``stream`` (standard error by default)."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def export(self, record: InvocationRecord) -> None:
        lines = []
        if record.init is not None:
            lines.append(init_line(record.init))
        if record.restore is not None:
            lines.append(restore_line(record.restore))
        lines.append(invocation_line(record))
        facts = record.facts
        environment_id = facts.environment_id
        lines.extend(event_line(e, environment_id, facts.request_id) for e in record.events)
        lines.extend(platform_line(f, environment_id) for f in record.platform)
        lines.extend(init_disagreement_line(d, environment_id) for d in record.init_disagreements)
        self._write(lines)

    def export_init_failure(self, failure: InitFailureRecord, timeout_s: float) -> None:
        self._write([init_failure_line(failure)])

    def _write(self, lines: list[dict[str, Any]]) -> None:
        # Only this debugging sink needs json, once it is used: the probe's import.
        with probe_work():
            import json

        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        stream = self._stream or sys.stderr
        stream.write(text)
        stream.flush()


def read_lines(log_text: str) -> list[dict[str, Any]]:
    """The probe's records from a log (a CloudWatch stream, a local Lambda's output).

    Lines that are not the probe's JSON are skipped, so a whole function log can be passed.
    """
    import json

    found: list[dict[str, Any]] = []
    marker = '{"' + RECORD_KEY + '":'
    for line in log_text.splitlines():
        start = line.find(marker)
        if start < 0:
            continue
        try:
            value = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found
