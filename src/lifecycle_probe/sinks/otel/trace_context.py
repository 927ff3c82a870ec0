"""Incoming trace context: W3C ``traceparent`` and X-Ray trace headers, parsed.

Pure string handling, no OpenTelemetry import: the pipeline turns the result into a
remote parent span context.
"""

from __future__ import annotations

_HEX = frozenset("0123456789abcdef")


def _lower_hex(text: str, length: int) -> bool:
    # int(x, 16) alone would accept "+", "_", upper case and whitespace.
    return len(text) == length and _HEX.issuperset(text)


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a W3C ``traceparent``, or None if invalid."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_hex, span_hex, flags_hex = parts[:4]
    if not (_lower_hex(version, 2) and version != "ff"):
        return None
    if version == "00" and len(parts) != 4:
        return None
    if not (_lower_hex(trace_hex, 32) and _lower_hex(span_hex, 16) and _lower_hex(flags_hex, 2)):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags_hex, 16) & 1)


def parse_xray(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of an X-Ray trace header, or None if invalid."""
    if not value:
        return None
    fields = {}
    for part in value.split(";"):
        key, _, item = part.strip().partition("=")
        fields[key] = item
    pieces = fields.get("Root", "").split("-")
    parent = fields.get("Parent", "")
    if len(pieces) != 3 or pieces[0] != "1":
        return None
    if not (_lower_hex(pieces[1], 8) and _lower_hex(pieces[2], 24) and _lower_hex(parent, 16)):
        return None
    trace_id, span_id = int(pieces[1] + pieces[2], 16), int(parent, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, fields.get("Sampled") == "1"
