"""The probe's own log lines: JSON when the function logs JSON, one plain line otherwise.

A function logs JSON when Lambda's runtime client formats its logs as JSON
(``AWS_LAMBDA_LOG_FORMAT=JSON``) or when it uses Powertools' ``Logger``. The probe's JSON
lines then carry the keys both of those write (``timestamp``, ``level``, ``message``,
``service``, ``cold_start``, ``function_name``, ``function_request_id``,
``xray_trace_id``, ``requestId``) and the probe's own (``lifecycle_probe``: the kind of
line, ``lifecycle_environment_id``, ``lifecycle_invocation_seq``, ``lifecycle_start``), so
that a Logs Insights query joins them with the function's own lines. No line ever carries
an event payload, a header, a DSN or an error message: only what the caller passes in
``fields``, which is the probe's own figures.

Plain lines: warnings go through the ``lifecycle_probe`` logger (Lambda's runtime prints
them with their level and request id; a function's logging set-up can filter them), the
INIT report is printed on standard output, like Lambda's own REPORT line, since Lambda's
default log level would hide an INFO line.
"""

from __future__ import annotations

import os
import sys

from lifecycle_probe._safe import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lifecycle_probe.records import FunctionFacts, LifecycleFacts

__all__ = [
    "GLOBAL_LEAK",
    "INFO",
    "INIT_FAILURE",
    "INIT_REPORT",
    "MEMORY_GROWTH",
    "SNAPSTART_HAZARD",
    "STALE_CONNECTION",
    "TIMEOUT",
    "TMP_THRESHOLD",
    "WARNING",
    "powertools_logger_in_use",
    "set_service",
    "write_line",
    "xray_trace_id",
]

INFO = "INFO"
WARNING = "WARNING"

# Kinds of line (the value of the ``lifecycle_probe`` key of a JSON line).
INIT_REPORT = "init_report"
INIT_FAILURE = "init_failure"
STALE_CONNECTION = "stale_connection"
GLOBAL_LEAK = "global_leak"
TMP_THRESHOLD = "tmp_threshold"
MEMORY_GROWTH = "memory_growth"
SNAPSTART_HAZARD = "snapstart_hazard"
TIMEOUT = "timeout"

# Powertools' service when none is configured (its own default, so that lines agree).
POWERTOOLS_DEFAULT_SERVICE = "service_undefined"

# The service of the Powertools Logger found in this process (None: none found yet).
_powertools_logger_service: str | None = None
# The probe's own service option, where one was given (the log sink sets it).
_configured_service: str | None = None


def set_service(service: str | None) -> None:
    """The service the probe was configured with, for every line (also capture's)."""
    global _configured_service
    if service:
        _configured_service = service


def powertools_logger_in_use() -> bool:
    """True once a Powertools ``Logger`` has set up its JSON handler in this process."""
    global _powertools_logger_service
    if _powertools_logger_service is not None:
        return True
    # Not imported: no Powertools Logger. Imported (``from aws_lambda_powertools import
    # Metrics`` imports it too): look for a handler with Powertools' formatter.
    formatter_module = sys.modules.get("aws_lambda_powertools.logging.formatter")
    logging = sys.modules.get("logging")
    if formatter_module is None or logging is None:
        return False
    base = getattr(formatter_module, "BasePowertoolsFormatter", None)
    if base is None:
        return False
    loggers = [logging.getLogger(), *list(logging.Logger.manager.loggerDict.values())]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            formatter = getattr(handler, "formatter", None)
            if isinstance(formatter, base):
                # Its lines name the service it was given in code or by variable.
                keys = getattr(formatter, "log_format", None)
                service = keys.get("service") if isinstance(keys, dict) else None
                _powertools_logger_service = str(service or "")
                return True
    return False


def service_of_lines(service: str | None = None) -> str:
    """The ``service`` of the probe's JSON lines: the probe's option, else the Powertools
    Logger's, else ``POWERTOOLS_SERVICE_NAME``, else Powertools' own default."""
    return (
        service
        or _configured_service
        or _powertools_logger_service
        or os.environ.get("POWERTOOLS_SERVICE_NAME")
        or POWERTOOLS_DEFAULT_SERVICE
    )


def logs_json() -> bool:
    """Whether the function's logs are JSON (so the probe's lines should be too)."""
    if os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").strip().upper() == "JSON":
        return True
    return powertools_logger_in_use()


def xray_trace_id(header: str | None) -> str | None:
    """The ``Root=`` part of an X-Ray trace header, as Powertools logs it."""
    if not header:
        return None
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "Root" and value:
            return value
    return None


def _timestamp(time_ns: int) -> str:
    import time

    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1_000_000:03d}Z"


def json_line(
    kind: str,
    level: str,
    message: str,
    fields: dict[str, Any],
    *,
    time_ns: int,
    facts: LifecycleFacts | None = None,
    function: FunctionFacts | None = None,
    xray_header: str | None = None,
    service: str | None = None,
    arn: str | None = None,
) -> dict[str, Any]:
    """The JSON object of one line, in the shape Powertools and Lambda's runtime write."""
    line: dict[str, Any] = {
        "level": level,
        "location": "lifecycle_probe",
        "message": message,
        "timestamp": _timestamp(time_ns),
        "service": service_of_lines(service),
        "logger": "lifecycle_probe",
        "lifecycle_probe": kind,
    }
    if function is not None:
        line["function_name"] = function.function_name
        # A string, as Powertools writes it (the context's memory_limit_in_mb is one).
        line["function_memory_size"] = (
            None if function.memory_mb is None else str(function.memory_mb)
        )
    if arn is not None:
        line["function_arn"] = arn
    if facts is not None:
        line["cold_start"] = facts.coldstart
        line["function_request_id"] = facts.request_id
        line["requestId"] = facts.request_id
        line["lifecycle_environment_id"] = facts.environment_id
        line["lifecycle_invocation_seq"] = facts.invocation_seq
        line["lifecycle_start"] = facts.start
    trace_id = xray_trace_id(xray_header)
    if trace_id is not None:
        line["xray_trace_id"] = trace_id
    line.update(fields)
    return line


def write_line(
    kind: str,
    level: str,
    message: str,
    fields: dict[str, Any],
    *,
    time_ns: int | None = None,
    **context: Any,
) -> None:
    """Write one of the probe's lines, JSON or plain as the function logs; ``context`` is
    :func:`json_line`'s (the invocation's facts, the function, the trace header, ...)."""
    if logs_json():
        import json
        import time

        when = time.time_ns() if time_ns is None else time_ns
        line = json_line(kind, level, message, fields, time_ns=when, **context)
        text = json.dumps(line, separators=(",", ":"), default=str) + "\n"
        sys.stdout.write(text)
        sys.stdout.flush()
    elif level == WARNING:
        get_logger().warning("%s", message)
    else:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
