"""The OTLP resource of the probe's telemetry: the function, and what the standard
OpenTelemetry variables add (``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``).

Read once, when the export pipeline is built. The same precedence as the SDK's
``Resource.create``: the function's facts, then ``OTEL_RESOURCE_ATTRIBUTES``, then
``OTEL_SERVICE_NAME`` for ``service.name``; the function's name when none is given.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lifecycle_probe._safe import warn_once

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lifecycle_probe.records import FunctionFacts

__all__ = ["function_resource", "scope"]

INSTRUMENTATION_SCOPE = "lifecycle_probe"


def probe_version() -> str:
    try:
        from importlib.metadata import version

        return version("lifecycle-probe")
    except Exception:
        return "unknown"


def scope() -> tuple[str, str]:
    """(name, version) of the instrumentation scope of every span and metric."""
    return INSTRUMENTATION_SCOPE, probe_version()


def function_resource(
    function: FunctionFacts, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The resource attributes of ``function``'s telemetry."""
    env = os.environ if environ is None else environ
    version = probe_version()
    attributes: dict[str, Any] = {
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "telemetry.auto.version": version,
    }
    defaults: tuple[tuple[str, str | int | None], ...] = (
        ("cloud.region", function.region),
        ("faas.name", function.function_name),
        ("faas.version", function.function_version),
        ("faas.instance", function.log_stream),
        (
            "faas.max_memory",
            None if function.memory_mb is None else function.memory_mb * 1024 * 1024,
        ),
    )
    for key, value in defaults:
        if value is not None:
            attributes[key] = value
    # The telemetry is the probe's own encoding, not an OpenTelemetry SDK's.
    attributes["telemetry.sdk.language"] = "python"
    attributes["telemetry.sdk.name"] = INSTRUMENTATION_SCOPE
    attributes["telemetry.sdk.version"] = version
    attributes.update(parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        attributes["service.name"] = service
    attributes.setdefault("service.name", function.function_name or "unknown_service")
    return attributes


def parse_resource_attributes(value: str) -> dict[str, str]:
    """``key1=value1,key2=value2`` (values percent-encoded, per the OpenTelemetry spec) as a
    dict; a malformed list is ignored whole, with one warning, as the SDK does."""
    if not value.strip():
        return {}
    from urllib.parse import unquote

    parsed: dict[str, str] = {}
    for member in value.split(","):
        if not member.strip():
            continue
        key, sep, item = member.partition("=")
        if not sep or not key.strip():
            warn_once(
                "otel:resource-attributes",
                "lifecycle_probe: OTEL_RESOURCE_ATTRIBUTES is not a list of key=value; "
                "it is ignored",
            )
            return {}
        parsed[key.strip()] = unquote(item.strip())
    return parsed
