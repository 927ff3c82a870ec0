"""Failed exports, said once: one warning per destination, signal and kind of failure.

A failure's kind (``HTTP 503``, ``ConnectionRefusedError (ECONNREFUSED)``, ``timeout``...)
is what a warning may show of it: exception type names and errno names, never an
exception's text (which may quote the URL and its query string, where API keys go), and
the endpoint with its userinfo and query string redacted.
"""

from __future__ import annotations

import errno

from lifecycle_probe._safe import warn_once

__all__ = [
    "BUILD_FAILED",
    "PLATFORM_FIGURES_EVICTED",
    "QUEUE_FULL",
    "TIMEOUT",
    "ExportError",
    "dropped_reason",
    "error_kind",
    "redact_url",
    "warn_export_failed",
]

# Reasons of the lifecycle.telemetry.dropped metric.
QUEUE_FULL = "queue_full"
EXPORT_FAILED = "export_failed"
TIMEOUT = "timeout"
BUILD_FAILED = "build_failed"
# Lambda's own reports of requests (Telemetry API) that the listener gave up before any
# export took them (more waited than it keeps): not the invocations' own telemetry, but
# each report's lifecycle.platform.report event (spans) and lifecycle.platform.* points
# (metrics) are lost all the same.
PLATFORM_FIGURES_EVICTED = "platform_figures_evicted"


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


class ExportError(Exception):
    """An export a destination did not take; ``kind`` is safe to log."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


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
