"""Incoming trace context: W3C ``traceparent`` and X-Ray trace headers, parsed.

Pure string handling, no OpenTelemetry import: the pipeline turns the result into a
remote parent span context.
"""

from __future__ import annotations


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a W3C ``traceparent``, or None if invalid."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, trace_hex, span_hex, flags_hex = parts[:4]
    if len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return None
    if version == "00" and len(parts) != 4:
        return None
    try:
        trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & 1)


def parse_xray(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of an X-Ray trace header, or None if invalid."""
    if not value:
        return None
    fields = {}
    for part in value.split(";"):
        key, _, item = part.strip().partition("=")
        fields[key] = item
    root, parent = fields.get("Root", ""), fields.get("Parent", "")
    pieces = root.split("-")
    if len(pieces) != 3 or pieces[0] != "1" or len(pieces[1]) != 8 or len(pieces[2]) != 24:
        return None
    if len(parent) != 16:
        return None
    try:
        trace_id, span_id = int(pieces[1] + pieces[2], 16), int(parent, 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, fields.get("Sampled") == "1"
