"""The model, continued: the records a healthy INIT never builds.

A SnapStart restore's record, a failed INIT's, and Lambda's own figures of a request (which
arrive after its response, on the internal extension's thread). They are records like
those of :mod:`lifecycle_probe.records`, and read from there (``from lifecycle_probe.records
import RestoreRecord`` loads this module); they live apart because Python makes a class at
import for ~0.1 M instructions, and INIT should not pay for four that most environments
never build. A SnapStart environment loads this module before its snapshot
(``runtime_hooks``), so that its restore never does.
"""

from __future__ import annotations

from lifecycle_probe.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lifecycle_probe.records import FunctionFacts, ImportRecord

__all__ = ["InitDisagreement", "InitFailureRecord", "PlatformFigures", "RestoreRecord"]


class RestoreRecord(Record):
    """The SnapStart restore of one environment: from the after-restore hook to the
    runtime's first request for an event after it (``end_source`` ``runtime``; else
    ``estimated``: the first invocation's start)."""

    environment_id: str
    start_ns: int
    end_ns: int
    end_source: str
    pid: int
    # Imports made during the restore (after-restore hooks), as the import tracer saw them.
    imports: tuple[ImportRecord, ...] = ()

    @property
    def duration_s(self) -> float:
        """Restore duration in seconds, as the probe measured it."""
        return (self.end_ns - self.start_ns) / 1e9


class InitFailureRecord(Record):
    """An INIT that failed: the function's module could not be imported or raised.

    Exported on its own, before the runtime reports the error and exits. Only the error's
    type is kept: its message may quote a DSN, a path with a secret, or a line of code.
    """

    environment_id: str
    init_type: str
    start_ns: int
    # When the failure reached the probe: the end of the failed INIT.
    end_ns: int
    start_source: str
    # The Lambda error type the runtime reports (``Runtime.ImportModuleError``, ...), or the
    # exception's qualified name for an exception raised by the function's own INIT code.
    error_type: str
    function: FunctionFacts
    # The function's handler setting (``module.function``), which names no secret.
    handler: str | None = None
    # The imports of the failed INIT up to the failure, as the import tracer saw them.
    imports: tuple[ImportRecord, ...] = ()
    imports_traced_from_ns: int | None = None
    pid: int = 0

    @property
    def duration_s(self) -> float:
        """How long the failed INIT ran, in seconds."""
        return (self.end_ns - self.start_ns) / 1e9


class PlatformFigures(Record):
    """What Lambda itself reported of one invocation (the Telemetry API's
    ``platform.report``): None where Lambda did not say. ``init_duration_ms`` and
    ``restore_duration_ms`` are those of the INIT and restore before that request."""

    request_id: str
    duration_ms: float | None = None
    billed_duration_ms: int | None = None
    max_memory_used_mb: int | None = None
    init_duration_ms: float | None = None
    restore_duration_ms: float | None = None


class InitDisagreement(Record):
    """Lambda's INIT duration for ``request_id`` and the probe's own differ by more than
    the agreement tolerance (see ``lifecycle_probe.lambda_figures``)."""

    request_id: str
    lambda_init_duration_ms: float
    probe_init_duration_ms: float
