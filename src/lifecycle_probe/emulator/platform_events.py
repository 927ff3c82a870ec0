"""The platform events of the Telemetry API, in the shapes AWS documents (schema 2022-12-13).

Each function returns an event's ``record``; the envelope (``time``, ``type``) is added
by :class:`~lifecycle_probe.emulator.telemetry_api.TelemetryDispatcher`. The figures are
those of the environment's ``REPORT`` and ``INIT`` accounting
(:class:`~lifecycle_probe.emulator.reports.ReportFigures`), so the two never disagree.
No event carries a payload: request ids, trace headers, statuses and durations only.
"""

from __future__ import annotations

from typing import Any

from lifecycle_probe.emulator import truth
from lifecycle_probe.emulator.function import FunctionConfig
from lifecycle_probe.emulator.invocation import Served
from lifecycle_probe.emulator.launch import FUNCTION_VERSION
from lifecycle_probe.emulator.reports import ReportFigures

__all__ = [
    "INIT_REPORT",
    "INIT_RUNTIME_DONE",
    "INIT_START",
    "REPORT",
    "RESTORE_REPORT",
    "RESTORE_RUNTIME_DONE",
    "RESTORE_START",
    "RUNTIME_DONE",
    "START",
    "SUCCESS",
    "TELEMETRY_SUBSCRIPTION",
    "init_report",
    "init_runtime_done",
    "init_start",
    "report",
    "restore_report",
    "restore_runtime_done",
    "restore_start",
    "runtime_done",
    "start",
    "telemetry_subscription",
]

INIT_START = "platform.initStart"
INIT_RUNTIME_DONE = "platform.initRuntimeDone"
INIT_REPORT = "platform.initReport"
RESTORE_START = "platform.restoreStart"
RESTORE_RUNTIME_DONE = "platform.restoreRuntimeDone"
RESTORE_REPORT = "platform.restoreReport"
START = "platform.start"
RUNTIME_DONE = "platform.runtimeDone"
REPORT = "platform.report"
TELEMETRY_SUBSCRIPTION = "platform.telemetrySubscription"

SUCCESS = "success"


def status_of(served: Served) -> str:
    """``success``, ``error`` (the function's), ``failure`` (the runtime's) or ``timeout``."""
    if served.outcome == truth.OK:
        return SUCCESS
    if served.outcome == truth.TIMEOUT:
        return "timeout"
    if served.error_type == "Runtime.ExitError":
        return "failure"
    return "error"


def _with_error(record: dict[str, Any], error_type: str | None) -> dict[str, Any]:
    if error_type is not None:
        record["errorType"] = error_type
    return record


def init_start(function: FunctionConfig, initialization_type: str) -> dict[str, Any]:
    """``platform.initStart``: the runtime process has been started."""
    return {
        "initializationType": initialization_type,
        "phase": "init",
        "functionName": function.function_name,
        "functionVersion": FUNCTION_VERSION,
        "instanceMaxMemory": function.memory_mb,
    }


def init_runtime_done(
    initialization_type: str, status: str, error_type: str | None = None
) -> dict[str, Any]:
    """``platform.initRuntimeDone``: INIT ended (``success``, ``error`` or ``timeout``)."""
    record = {"initializationType": initialization_type, "phase": "init", "status": status}
    return _with_error(record, error_type)


def init_report(
    initialization_type: str, status: str, duration_ms: float, error_type: str | None = None
) -> dict[str, Any]:
    """``platform.initReport``: how long INIT took (the REPORT line's Init Duration)."""
    record: dict[str, Any] = {
        "initializationType": initialization_type,
        "phase": "init",
        "status": status,
        "metrics": {"durationMs": round(duration_ms, 3)},
    }
    return _with_error(record, error_type)


def restore_start(function: FunctionConfig) -> dict[str, Any]:
    """``platform.restoreStart``: a snap-start environment is being restored."""
    return {
        "functionName": function.function_name,
        "functionVersion": FUNCTION_VERSION,
        "instanceMaxMemory": function.memory_mb,
    }


def restore_runtime_done(status: str, error_type: str | None = None) -> dict[str, Any]:
    """``platform.restoreRuntimeDone``: the after-restore hooks have run."""
    return _with_error({"status": status}, error_type)


def restore_report(
    status: str, duration_ms: float, error_type: str | None = None
) -> dict[str, Any]:
    """``platform.restoreReport``: how long the restore took."""
    record: dict[str, Any] = {"status": status, "metrics": {"durationMs": round(duration_ms, 3)}}
    return _with_error(record, error_type)


def start(request_id: str, trace_id: str) -> dict[str, Any]:
    """``platform.start``: an invocation was handed to the runtime."""
    return {
        "requestId": request_id,
        "version": FUNCTION_VERSION,
        "tracing": {"type": "X-Amzn-Trace-Id", "value": trace_id},
    }


def runtime_done(request_id: str, served: Served, figures: ReportFigures) -> dict[str, Any]:
    """``platform.runtimeDone``: the runtime answered (or did not, in time)."""
    record: dict[str, Any] = {
        "requestId": request_id,
        "status": status_of(served),
        "metrics": {"durationMs": round(figures.duration_ms, 3)},
    }
    return _with_error(record, None if served.outcome == truth.OK else served.error_type)


def report(request_id: str, served: Served, figures: ReportFigures) -> dict[str, Any]:
    """``platform.report``: the figures of the invocation's REPORT line."""
    metrics: dict[str, Any] = {
        "durationMs": round(figures.duration_ms, 3),
        "billedDurationMs": figures.billed_duration_ms,
        "memorySizeMB": figures.memory_size_mb,
        "maxMemoryUsedMB": figures.max_memory_used_mb,
    }
    if figures.init_duration_ms is not None:
        metrics["initDurationMs"] = round(figures.init_duration_ms, 3)
    if figures.restore_duration_ms is not None:
        metrics["restoreDurationMs"] = round(figures.restore_duration_ms, 3)
        metrics["billedRestoreDurationMs"] = figures.billed_restore_duration_ms
    record: dict[str, Any] = {
        "requestId": request_id,
        "status": status_of(served),
        "metrics": metrics,
    }
    return _with_error(record, None if served.outcome == truth.OK else served.error_type)


def telemetry_subscription(extension_name: str, types: frozenset[str]) -> dict[str, Any]:
    """``platform.telemetrySubscription``: an extension subscribed."""
    return {"name": extension_name, "state": "Subscribed", "types": sorted(types)}
