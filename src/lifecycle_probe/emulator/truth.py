"""Ground truth the emulator records: what really happened to each request and environment.

The probe's own tags are compared against these records, so they are immutable
snapshots taken by the emulator itself, never derived from what the runtime says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

__all__ = [
    "COLD",
    "ERROR",
    "OK",
    "PROACTIVE_START",
    "PROVISIONED",
    "RESTORED",
    "START_TYPE_OF_FIRST_INVOKE",
    "TIMEOUT",
    "WARM",
    "EnvironmentInfo",
    "InvocationResult",
]

OK: Final = "ok"
"""The handler returned a response."""
ERROR: Final = "error"
"""The handler raised, INIT failed, or the runtime exited."""
TIMEOUT: Final = "timeout"
"""The invocation (or its INIT) ran past its time limit; the environment was killed."""

COLD: Final = "cold"
WARM: Final = "warm"
PROVISIONED: Final = "provisioned"
PROACTIVE_START: Final = "proactive"
RESTORED: Final = "restored"

START_TYPE_OF_FIRST_INVOKE: Final = {
    "on-demand": COLD,
    "provisioned-concurrency": PROVISIONED,
    "proactive": PROACTIVE_START,
    "snap-start": RESTORED,
}
"""The start type the probe should report for the first request of each init type."""


@dataclass(frozen=True)
class InvocationResult:
    """One request as the emulator served it.

    ``environment`` and ``pid`` name the environment that served it. ``cold`` is true
    when the environment was new for this request (its first request, whatever its
    init type); ``init_type`` is that environment's init type and ``start_type_truth``
    what the probe should report: ``cold``, ``warm``, ``provisioned``, ``proactive`` or
    ``restored``. ``start_ns`` is when the request arrived (``time.time_ns()``),
    ``delivered_ns`` when the event was handed to the runtime (0 if it never was),
    ``end_ns`` when the response, error or timeout came; ``duration_ms`` runs from
    delivery to end, as Lambda's billed ``Duration`` (INIT excluded; for a failed INIT,
    from arrival). ``init_duration_ms`` is the environment's INIT time on a cold start.
    ``outcome`` is ``ok``, ``error`` or ``timeout``; ``response`` is the parsed JSON
    response (or its text), ``error`` the runtime's error JSON and ``error_type`` its
    type (from ``Lambda-Runtime-Function-Error-Type`` or the JSON).

    Under Lambda Managed Instances (``FunctionConfig.max_concurrency``) each worker
    process of an environment is an environment of its own for the probe (its own INIT):
    ``worker_pid`` is the worker that took the request (``pid`` stays the environment's
    runtime process), and ``cold`` is true for that worker's first request. Its
    ``start_type_truth`` is ``cold`` when the request waited for that worker's INIT (the
    worker first asked for work after the environment got the request), ``proactive``
    when the worker had finished INIT before (initialised ahead of demand), and
    ``warm`` for the worker's later requests. ``init_duration_ms`` then runs from the
    environment's start to that worker's first ``invocation/next``. ``worker_pid`` is
    None for Lambda (default) environments.
    """

    request_id: str
    environment: str
    pid: int | None
    cold: bool
    init_type: str
    start_type_truth: str
    start_ns: int
    delivered_ns: int
    end_ns: int
    duration_ms: float
    outcome: str
    response: Any = None
    error: Any = None
    error_type: str | None = None
    init_duration_ms: float | None = None
    trace_id: str = ""
    log_stream: str = ""
    worker_pid: int | None = None

    @property
    def ok(self) -> bool:
        """True when the handler returned a response."""
        return self.outcome == OK

    def to_dict(self) -> dict[str, Any]:
        """Every field as a JSON-ready dict."""
        return asdict(self)

    def to_output(self) -> dict[str, Any]:
        """The record ``lifecycle-probe emulate --output`` writes for this request."""
        record: dict[str, Any] = {
            "request_id": self.request_id,
            "environment": self.environment,
            "cold": self.cold,
            "init_type": self.init_type,
            "start_type_truth": self.start_type_truth,
            "duration_ms": round(self.duration_ms, 3),
            "outcome": self.outcome,
        }
        if self.worker_pid is not None:
            record["worker_pid"] = self.worker_pid
        if self.outcome == OK:
            record["response"] = self.response
        else:
            record["error"] = self.error
        return record


@dataclass(frozen=True)
class EnvironmentInfo:
    """A snapshot of one execution environment.

    ``id`` is the emulator's name for it (``env-1``, ...), ``init_type`` how it was
    initialised, ``pid`` its runtime process, ``port`` its Runtime API port,
    ``log_stream`` its ``AWS_LAMBDA_LOG_STREAM_NAME`` and ``log_path`` the file holding
    the process's stdout and stderr. ``state`` is one of ``init``, ``snapshot`` (INIT
    done, held at ``restore/next``), ``restoring``, ``idle``, ``invoking``,
    ``post-invoke`` (response sent, runtime or extensions still busy), ``shutdown`` or
    ``dead``; ``frozen`` whether it is SIGSTOPped now.

    Instants are ``time.time_ns()``: ``spawn_start_ns`` / ``spawn_end_ns`` around the
    process start; ``first_next_ns`` when the runtime first asked for work
    (``invocation/next``, or ``restore/next`` under snap-start); ``init_done_ns`` when
    the runtime and every extension had asked (INIT complete); for snap-start,
    ``restore_start_ns`` when the restore began (the snapshot thawed),
    ``restore_done_ns`` when ``restore/next`` was answered and ``restored_next_ns`` the
    first ``invocation/next`` after it; ``last_freeze_ns`` / ``last_thaw_ns`` the latest
    SIGSTOP / SIGCONT; ``ended_ns`` when it died. ``end_reason`` says why: ``reaped``,
    ``timeout``, ``killed``, ``init-error``, ``init-timeout``, ``restore-error``,
    ``exited`` or ``closed``; ``exit_status`` is the process's return code (negative:
    killed by that signal). ``init_error`` is the error JSON of a failed INIT.

    Under Lambda Managed Instances, ``max_concurrency`` is the number of worker processes
    and ``workers`` their pids, in the order they first asked for work; ``frozen`` is
    never true and ``freezes`` stays 0 (such environments are never frozen); ``state``
    is ``invoking`` while any request is in flight. Both are None and ``()`` otherwise.
    """

    id: str
    init_type: str
    pid: int | None
    port: int
    log_stream: str
    log_path: str
    state: str
    frozen: bool
    spawn_start_ns: int
    spawn_end_ns: int
    first_next_ns: int | None
    init_done_ns: int | None
    restore_done_ns: int | None
    restored_next_ns: int | None
    last_freeze_ns: int | None
    last_thaw_ns: int | None
    freezes: int
    invocations: int
    request_ids: tuple[str, ...]
    extensions: tuple[str, ...]
    init_error: Any
    end_reason: str | None
    exit_status: int | None
    ended_ns: int | None
    max_concurrency: int | None = None
    workers: tuple[int, ...] = ()
    restore_start_ns: int | None = None  # snap-start: when the restore began (the thaw)

    @property
    def alive(self) -> bool:
        """True until the environment has died."""
        return self.state != "dead"

    @property
    def init_duration_ms(self) -> float | None:
        """From process start to INIT complete, if INIT completed."""
        if self.init_done_ns is None:
            return None
        return (self.init_done_ns - self.spawn_start_ns) / 1e6

    @property
    def restore_duration_ms(self) -> float | None:
        """Snap-start: from the restore's start to the runtime's first ``invocation/next``."""
        if self.restore_start_ns is None or self.restored_next_ns is None:
            return None
        return (self.restored_next_ns - self.restore_start_ns) / 1e6
