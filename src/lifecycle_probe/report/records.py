"""What the report reads, whatever the source: INITs, invocations, imports and events.

The readers turn OTLP JSON, EMF documents and the probe's JSON log lines into these few
plain records; the summary and the timeline only ever see these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The event names are the probe's model's: the report reads what the sinks wrote.
from lifecycle_probe.records import (
    HAZARD_EVENT,
    LEAK_EVENT,
    PLATFORM_REPORT_EVENT,
    STALE_EVENT,
)

__all__ = [
    "HAZARD_EVENT",
    "LEAK_EVENT",
    "PLATFORM_REPORT_EVENT",
    "STALE_EVENT",
    "Event",
    "Import",
    "Init",
    "Invocation",
    "Record",
]


@dataclass(slots=True)
class Init:
    """One environment's INIT (``failed``: it never served a request)."""

    environment: str
    init_type: str | None
    duration_s: float
    start_ns: int | None = None
    end_ns: int | None = None
    failed: bool = False
    error_type: str | None = None
    function: str | None = None
    # A SnapStart restore (the restored environment's start), not an INIT; measured by
    # ``lambda`` (its Telemetry API figure) or by the ``probe`` (its after-restore hook,
    # which runs once Lambda has loaded the snapshot: shorter than Lambda's).
    restore: bool = False
    source: str = "probe"


@dataclass(slots=True)
class Import:
    """One traced import: its own time, without the imports nested in it."""

    environment: str
    module: str
    self_s: float
    origin: str | None = None
    after_init: bool = False
    start_ns: int | None = None
    end_ns: int | None = None
    # The import the function's own code made that led to this one (itself, if a module
    # of the function's imported it): what the function can move. From OTLP spans only.
    imported_by: str | None = None


@dataclass(slots=True)
class Event:
    """A lifecycle event (stale connection, leaked global, SnapStart hazard)."""

    environment: str
    name: str
    attributes: dict[str, Any]
    invocation_seq: int | None = None
    time_ns: int | None = None


@dataclass(slots=True)
class Invocation:
    """One invocation as the probe tagged it."""

    environment: str
    seq: int
    start: str
    outcome: str
    start_ns: int | None
    end_ns: int | None
    idle_s: float | None = None
    init_type: str | None = None
    function: str | None = None
    error_type: str | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        if self.start_ns is None or self.end_ns is None:
            return None
        return max(0.0, (self.end_ns - self.start_ns) / 1e9)


Record = Init | Import | Event | Invocation
