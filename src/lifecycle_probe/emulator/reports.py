"""What an environment reports about its invocations: the figures and the log lines.

Lambda writes ``START``, ``END`` and ``REPORT`` lines into the function's log stream
and sends the same figures as Telemetry API ``platform.report`` events; both are made
from one :class:`ReportFigures`, so the two can never disagree.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from lifecycle_probe.emulator.invocation import Served
from lifecycle_probe.emulator.launch import FUNCTION_VERSION

__all__ = ["EnvironmentLog", "ReportFigures", "report_figures"]


@dataclass(frozen=True)
class ReportFigures:
    """The figures of one invocation's ``REPORT`` line."""

    duration_ms: float
    billed_duration_ms: int
    memory_size_mb: int
    max_memory_used_mb: int
    init_duration_ms: float | None = None  # on the first invocation after an INIT
    # On the first invocation after a snap-start restore, instead of the INIT's.
    restore_duration_ms: float | None = None

    @property
    def billed_restore_duration_ms(self) -> int | None:
        """The restore's billed milliseconds (rounded up), when there was a restore."""
        if self.restore_duration_ms is None:
            return None
        return _billed_ms(self.restore_duration_ms)


def _billed_ms(duration_ms: float) -> int:
    # Lambda bills whole milliseconds, rounding up, and at least one.
    return max(1, int(duration_ms + 0.999999))


def max_memory_used_mb(pid: int | None) -> int:
    """The process's peak resident set (``VmHWM``) in MB; 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return 0


# AWS_LAMBDA_INITIALIZATION_TYPE of an environment initialised by provisioned concurrency.
PROVISIONED_CONCURRENCY = "provisioned-concurrency"


def report_figures(
    served: Served,
    memory_size_mb: int,
    pid: int | None,
    initialization_type: str | None = None,
) -> ReportFigures:
    """The figures of ``served``, with the peak memory of process ``pid`` now."""
    duration_ms = (served.end_ns - served.delivered_ns) / 1e6
    restored = served.restore_duration_ms is not None
    # Provisioned concurrency runs INIT ahead of any request, which does not wait for it:
    # Lambda leaves Init Duration out of the first request's REPORT line and
    # platform.report (initDurationMs); the INIT has its own platform.initReport.
    ahead = initialization_type == PROVISIONED_CONCURRENCY
    return ReportFigures(
        duration_ms=duration_ms,
        billed_duration_ms=_billed_ms(duration_ms),
        memory_size_mb=memory_size_mb,
        max_memory_used_mb=max_memory_used_mb(pid),
        # A restored environment's INIT ran before the snapshot: Lambda reports the
        # restore on the invocation, and the INIT only in its own platform.initReport.
        init_duration_ms=None if restored or ahead else served.init_duration_ms,
        restore_duration_ms=served.restore_duration_ms,
    )


class EnvironmentLog:
    """One environment's log stream: the runtime's output plus the platform's lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, line: str) -> None:
        """Append one platform line."""
        # Appending (O_APPEND) interleaves whole lines with the runtime's own output.
        # Best effort: a request finishing while its local Lambda closes finds the
        # temporary log directory gone.
        with contextlib.suppress(OSError), open(self.path, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def text(self) -> str:
        """Everything the process wrote to stdout and stderr, plus the platform's lines."""
        return self.path.read_text(encoding="utf-8", errors="replace")

    def start(self, request_id: str) -> None:
        """The ``START`` line of an invocation."""
        self.write(f"START RequestId: {request_id} Version: {FUNCTION_VERSION}")

    def end(self, request_id: str, figures: ReportFigures) -> None:
        """The ``END`` and ``REPORT`` lines of an invocation."""
        report = (
            f"REPORT RequestId: {request_id}\tDuration: {figures.duration_ms:.2f} ms\t"
            f"Billed Duration: {figures.billed_duration_ms} ms\t"
            f"Memory Size: {figures.memory_size_mb} MB\t"
            f"Max Memory Used: {figures.max_memory_used_mb} MB"
        )
        if figures.init_duration_ms is not None:
            report += f"\tInit Duration: {figures.init_duration_ms:.2f} ms"
        if figures.restore_duration_ms is not None:
            report += (
                f"\tRestore Duration: {figures.restore_duration_ms:.2f} ms"
                f"\tBilled Restore Duration: {figures.billed_restore_duration_ms} ms"
            )
        self.write(f"END RequestId: {request_id}")
        self.write(report)
