"""Incoming trace context: W3C ``traceparent`` and X-Ray trace headers, parsed.

Pure string handling, no OpenTelemetry import: the spans of an invocation continue the
result (its trace id, its parent span id, its trace state).
"""

from __future__ import annotations

__all__ = ["parse_traceparent", "parse_tracestate", "parse_xray"]

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


# W3C Trace Context, tracestate list members: a simple key or a multi-tenant one
# (tenant@system), and a value of printable characters without "," and "=".
_TRACESTATE_MEMBER = (
    r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_MAX_TRACESTATE_MEMBERS = 32


def parse_tracestate(value: str | None) -> str:
    """A W3C ``tracestate`` header, normalised (``key=value`` members joined by ","), or ""
    when it is absent or invalid: as OpenTelemetry's TraceState does, one bad or repeated
    member drops the whole header, never the trace."""
    if not value:
        return ""
    import re

    members = [member.strip() for member in value.split(",")]
    members = [member for member in members if member]  # empty members are allowed
    if len(members) > _MAX_TRACESTATE_MEMBERS:
        return ""
    keys = set()
    for member in members:
        if re.fullmatch(_TRACESTATE_MEMBER, member) is None:
            return ""
        key = member.partition("=")[0]
        if key in keys:
            return ""
        keys.add(key)
    return ",".join(members)
