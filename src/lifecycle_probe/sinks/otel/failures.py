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


# What may be shown of an endpoint's host: a DNS name or IPv4 address, or an IPv6 one in
# brackets, and a port. Anything else (percent-encoding, spaces, a second colon) may be a
# mistyped secret, so it is not shown.
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*"
_HOST_PORT = r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
NOT_SHOWN = "<not shown>"


def redact_url(url: str) -> str:
    """What may be shown of a collector's endpoint ``url``: its scheme, host, port and
    path, never its userinfo, query string (``?<redacted>`` says one was there) or fragment.

    Parsed here rather than by ``urlsplit``, which reads ``user:pw@host`` (an endpoint
    without its scheme, a common mistake) as the scheme ``user`` and a path holding the
    password, and whose errors quote the authority. The userinfo ends at the authority's
    last ``@``; an ``@`` after the authority (a password holding ``/``, ``?`` or ``#``
    splits it there) means the host cannot be told apart from the secret, and only the
    scheme is shown, with ``<not shown>``, as for a host or port that is not one.
    """
    import re  # imported when a URL is shown, not at INIT
    from urllib.parse import quote

    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        # No scheme: read as an authority and path, shown without a scheme.
        scheme, rest = "", text
    elif not re.fullmatch(_SCHEME, scheme):
        return NOT_SHOWN
    prefix = f"{scheme.lower()}://" if scheme else ""
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    if "@" in tail:
        return prefix + NOT_SHOWN
    host_port = authority.rpartition("@")[2]
    match = re.fullmatch(_HOST_PORT, host_port)
    if match is None or int(match["port"] or 0) > 65535:
        return prefix + NOT_SHOWN
    cut = min((i for i in (tail.find("?"), tail.find("#")) if i != -1), default=len(tail))
    # The path as sent, percent-encoded where it is not printable ASCII (a newline would
    # forge a log line).
    path = quote(tail[:cut], safe="/:;=,+!$&'()*~.-_%")
    query = "?<redacted>" if "?" in tail else ""
    return prefix + host_port.lower() + path + query


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
