"""Failed exports, said once: one warning per destination, signal and kind of failure.

The OpenTelemetry exporters log every failed or retried export themselves, 2-4 lines per
flush, and their lines quote the collector's URL with its query string (where API keys
go) and urllib3's error text (which quotes the request path again). For the probe's own
exporters those lines are replaced: each exporter instance gets an :class:`ExportNote`
as its logger, which keeps the kind of the last failure (``HTTP 503``,
``ConnectionRefusedError``, ``ReadTimeoutError``...) for the probe's one warning, with the
endpoint's userinfo and query string redacted. A filter on the SDK's exporter loggers
drops what is still logged there from the probe's own threads (lines logged through the
module logger, not the instance's). A user's own exporters, on the user's threads, keep
their logging untouched.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from lifecycle_probe._safe import warn_once
from lifecycle_probe.environment import probe_threads

# The loggers of the OTLP JSON exporters (HTTP and file) and of their shared HTTP client.
SDK_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.json.http._internal",
    "opentelemetry.exporter.otlp.json.http.trace_exporter",
    "opentelemetry.exporter.otlp.json.http.metric_exporter",
    "opentelemetry.exporter.otlp.json.file._internal",
    "opentelemetry.exporter.otlp.json.file.trace_exporter",
    "opentelemetry.exporter.otlp.json.file.metric_exporter",
    "opentelemetry.exporter.otlp.json.common._internal",
    "opentelemetry.exporter.otlp.json.common._internal.metrics_encoder",
)

# Reasons of the lifecycle.telemetry.dropped metric.
QUEUE_FULL = "queue_full"
EXPORT_FAILED = "export_failed"
TIMEOUT = "timeout"
BUILD_FAILED = "build_failed"


def redact_url(url: str) -> str:
    """``url`` without its userinfo, query string and fragment (``?<redacted>`` says one
    was there): what may be shown of a collector's endpoint."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        query = "<redacted>" if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:  # not even a URL (a bad port): show nothing of it
        return "<an invalid URL>"


def error_kind(exc: BaseException) -> str:
    """A failure's kind, safe to log: exception type names down to the root cause and an
    errno's name, never an exception's text (urllib3's quotes the URL and its query)."""
    names = [type(exc).__name__]
    seen = exc
    for _ in range(4):
        # urllib3 wraps the cause in .reason (MaxRetryError) or in its args
        # (ProtocolError('Connection aborted.', ConnectionResetError(...))).
        inner = getattr(seen, "reason", None)
        if not isinstance(inner, BaseException):
            args = getattr(seen, "args", ())
            inner = next((a for a in args if isinstance(a, BaseException)), None)
        if not isinstance(inner, BaseException):
            inner = seen.__cause__
        if not isinstance(inner, BaseException) or inner is seen:
            break
        names.append(type(inner).__name__)
        seen = inner
    kind = "/".join(dict.fromkeys(names))
    code = getattr(seen, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        kind += f" ({errno.errorcode[code]})"
    return kind


def dropped_reason(kind: str | None) -> str:
    """The ``lifecycle.telemetry.dropped`` reason of a failure of ``kind``."""
    if kind is not None and "timeout" in kind.lower():
        return TIMEOUT
    return EXPORT_FAILED


class ExportNote:
    """Stands in for the logger of one of the probe's exporter instances: keeps the kind of
    the last failure it was told of instead of printing it."""

    def __init__(self) -> None:
        self.kind: str | None = None
        # What the transport last answered, when it could be watched: the exporter's
        # own message for a failure after retries ("due to timeout, max retries or
        # shutdown") does not say what failed.
        self.answer: str | None = None

    def take(self) -> str | None:
        """The last failure's kind since the last call, or None."""
        kind = self.answer or self.kind
        self.kind = self.answer = None
        return kind

    def observe(self, result: object) -> None:
        """Note one answer of the HTTP transport (a status code, or an error)."""
        error = getattr(result, "error", None)
        status = getattr(result, "status_code", None)
        if isinstance(error, BaseException):
            self.answer = error_kind(error)
        elif isinstance(status, int) and not 200 <= status < 400:
            self.answer = f"HTTP {status}"

    def _note(self, message: object, *args: Any, **kwargs: Any) -> None:
        error = next((a for a in args if isinstance(a, BaseException)), None)
        if error is not None:
            self.kind = error_kind(error)
            return
        status = next(
            (a for a in args if isinstance(a, int) and not isinstance(a, bool) and 100 <= a < 600),
            None,
        )
        if status is not None:
            self.kind = f"HTTP {status}"
        elif "timeout" in str(message).lower():
            self.kind = self.kind or "timeout"
        elif self.kind is None:
            self.kind = "export error"

    warning = error = exception = critical = _note

    def log(self, level: int, message: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.WARNING:
            self._note(message, *args)

    def debug(self, *args: Any, **kwargs: Any) -> None:
        return None

    info = debug

    def isEnabledFor(self, level: int) -> bool:  # logging.Logger's name
        return level >= logging.WARNING


def quiet(exporter: object) -> ExportNote | None:
    """Give one of the probe's exporters an :class:`ExportNote` for a logger; None when
    this exporter version keeps its logger elsewhere (the module filter still applies)."""
    note = ExportNote()
    # OTLPSpanExporter/OTLPMetricExporter log through their HTTP client, the file
    # exporters through their _FileExporter; both keep the logger in ``_logger``.
    for holder in (getattr(exporter, "_client", None), getattr(exporter, "_exporter", None)):
        if holder is not None and isinstance(getattr(holder, "_logger", None), logging.Logger):
            holder._logger = note
            _watch_transport(getattr(holder, "_transport", None), note)
            return note
    return None


def _watch_transport(transport: object, note: ExportNote) -> None:
    request = getattr(transport, "request", None)
    if request is None or not callable(request):
        return

    def watched(*args: Any, **kwargs: Any) -> Any:
        result = request(*args, **kwargs)
        try:
            note.observe(result)
        except Exception:  # only a better warning was at stake
            pass
        return result

    try:
        transport.request = watched  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # a transport with slots: the logger's note stays
        pass


class _FromProbeThreads(logging.Filter):
    """Drops records logged on the probe's own threads (the export thread, the extension)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread not in probe_threads


_FILTER = _FromProbeThreads()


def quiet_sdk_loggers() -> None:
    """Keep the SDK exporters' own lines out of the function's logs when the probe's
    threads export (idempotent)."""
    for name in SDK_EXPORTER_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def warn_export_failed(signal: str, destination: str, kind: str) -> None:
    """One warning per destination, signal and kind of failure."""
    warn_once(
        f"otel:export-failed:{signal}:{destination}:{kind}",
        "lifecycle_probe: OpenTelemetry %s export to %s failed (%s); it is sent again with "
        "the next flush (this warning is shown once)",
        signal,
        destination,
        kind,
    )
