"""Where ``otlp`` sends, read once from the standard ``OTEL_EXPORTER_OTLP_*`` variables.

Per the OpenTelemetry specification: a signal's own ``..._TRACES_ENDPOINT`` /
``..._METRICS_ENDPOINT`` is used as it is; the shared ``OTEL_EXPORTER_OTLP_ENDPOINT`` gets
``/v1/traces`` or ``/v1/metrics`` appended; neither means the collector layer's
``http://localhost:4318``. Headers (``OTEL_EXPORTER_OTLP_HEADERS`` and the per-signal
ones) are ``key=value`` lists, percent-encoded; ``..._COMPRESSION`` is ``gzip`` or none;
``..._CERTIFICATE`` a CA bundle for https. The probe speaks OTLP/HTTP with JSON bodies: a
``..._PROTOCOL`` asking for another gets one warning.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from lifecycle_probe._safe import warn_once
from lifecycle_probe.sinks.otel.failures import redact_url

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Endpoint", "endpoint"]

DEFAULT_ENDPOINT = "http://localhost:4318"
SIGNAL_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics"}


class Endpoint(NamedTuple):
    """One signal's destination: its URL, the headers to send, gzip or not, a CA file."""

    url: str
    headers: tuple[tuple[str, str], ...]
    gzip: bool
    certificate: str | None


def endpoint(signal: str, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The ``traces`` or ``metrics`` endpoint the environment names."""
    env = os.environ if environ is None else environ
    upper = signal.upper()

    def setting(name: str) -> str:
        value = env.get(f"OTEL_EXPORTER_OTLP_{upper}_{name}", "").strip()
        return value or env.get(f"OTEL_EXPORTER_OTLP_{name}", "").strip()

    url = env.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", "").strip()
    if not url:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
        url = base.rstrip("/") + SIGNAL_PATHS[signal]
    _check_url(url)
    protocol = setting("PROTOCOL")
    if protocol and protocol != "http/json":
        warn_once(
            f"otel:protocol:{protocol}",
            "lifecycle_probe: OTEL_EXPORTER_OTLP_PROTOCOL=%r: the probe sends OTLP/HTTP with "
            "JSON bodies (http/json), which OpenTelemetry collectors accept on their HTTP port",
            protocol,
        )
    compression = setting("COMPRESSION").lower()
    if compression not in ("", "none", "gzip"):
        warn_once(
            f"otel:compression:{compression}",
            "lifecycle_probe: OTEL_EXPORTER_OTLP_COMPRESSION=%r is not gzip or none; "
            "sending uncompressed",
            compression,
        )
    headers = _headers(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
    headers.update(_headers(env.get(f"OTEL_EXPORTER_OTLP_{upper}_HEADERS", "")))
    return Endpoint(
        url,
        tuple(headers.items()),
        compression == "gzip",
        setting("CERTIFICATE") or None,
    )


def _check_url(url: str) -> None:
    """Refuse ``url`` unless it is an http(s) URL with a host, saying it redacted.

    Checked here, before anything else parses it: ``urlsplit``'s own errors quote the
    authority, userinfo and all (``netloc 'user:pw...' contains invalid characters``).
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number in 0-65535 raises ValueError
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"not a valid http(s) URL: {redact_url(url)}")


def _headers(value: str) -> dict[str, str]:
    # Header values are where API keys go: a malformed list is said without its text.
    if not value.strip():
        return {}
    from urllib.parse import unquote

    headers: dict[str, str] = {}
    for member in value.split(","):
        if not member.strip():
            continue
        key, sep, item = member.partition("=")
        name = unquote(key.strip())
        text = unquote(item.strip())
        if not sep or not name or any(c in name + text for c in "\r\n"):
            warn_once(
                "otel:headers",
                "lifecycle_probe: an OTEL_EXPORTER_OTLP_*HEADERS entry is not key=value; "
                "it is left out",
            )
            continue
        headers[name.lower()] = text
    return headers
