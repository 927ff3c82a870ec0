"""A file exporter for rotel-agent, which has none: OTLP/HTTP protobuf in, OTLP JSON lines out.

rotel-agent (the collector in the dev extras) exports OTLP only over the network, as
gzip-compressed protobuf. This receiver takes its trace exports and writes each batch as
one line of OTLP JSON, encoded as the OpenTelemetry Collector's file exporter encodes
it (hex ids, 64-bit integers as strings, enums as numbers, camelCase names). The
batching, merging and re-encoding of the spans are the real collector's.
"""

from __future__ import annotations

import gzip
import http.server
import json
import struct
import threading
from pathlib import Path
from typing import Any

# field number -> (JSON name, kind, repeated, sub-schema)
ANY_VALUE: dict[int, tuple[str, str, bool, Any]] = {}
KEY_VALUE = {1: ("key", "string", False, None), 2: ("value", "message", False, ANY_VALUE)}
ARRAY_VALUE = {1: ("values", "message", True, ANY_VALUE)}
KVLIST_VALUE = {1: ("values", "message", True, KEY_VALUE)}
ANY_VALUE.update(
    {
        1: ("stringValue", "string", False, None),
        2: ("boolValue", "bool", False, None),
        3: ("intValue", "int64", False, None),
        4: ("doubleValue", "double", False, None),
        5: ("arrayValue", "message", False, ARRAY_VALUE),
        6: ("kvlistValue", "message", False, KVLIST_VALUE),
        7: ("bytesValue", "bytes", False, None),
    }
)
ATTRIBUTES = ("attributes", "message", True, KEY_VALUE)
STATUS = {2: ("message", "string", False, None), 3: ("code", "uint", False, None)}
EVENT = {
    1: ("timeUnixNano", "fixed64", False, None),
    2: ("name", "string", False, None),
    3: ATTRIBUTES,
    4: ("droppedAttributesCount", "uint", False, None),
}
SPAN = {
    1: ("traceId", "hex", False, None),
    2: ("spanId", "hex", False, None),
    3: ("traceState", "string", False, None),
    4: ("parentSpanId", "hex", False, None),
    5: ("name", "string", False, None),
    6: ("kind", "uint", False, None),
    7: ("startTimeUnixNano", "fixed64", False, None),
    8: ("endTimeUnixNano", "fixed64", False, None),
    9: ATTRIBUTES,
    10: ("droppedAttributesCount", "uint", False, None),
    11: ("events", "message", True, EVENT),
    12: ("droppedEventsCount", "uint", False, None),
    14: ("droppedLinksCount", "uint", False, None),
    15: ("status", "message", False, STATUS),
    16: ("flags", "fixed32", False, None),
}
SCOPE = {
    1: ("name", "string", False, None),
    2: ("version", "string", False, None),
    3: ATTRIBUTES,
}
SCOPE_SPANS = {
    1: ("scope", "message", False, SCOPE),
    2: ("spans", "message", True, SPAN),
    3: ("schemaUrl", "string", False, None),
}
RESOURCE = {1: ATTRIBUTES, 2: ("droppedAttributesCount", "uint", False, None)}
RESOURCE_SPANS = {
    1: ("resource", "message", False, RESOURCE),
    2: ("scopeSpans", "message", True, SCOPE_SPANS),
    3: ("schemaUrl", "string", False, None),
}
TRACES_REQUEST = {1: ("resourceSpans", "message", True, RESOURCE_SPANS)}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def decode(data: bytes, schema: dict[int, tuple[str, str, bool, Any]]) -> dict[str, Any]:
    """One protobuf message as the JSON object of the OTLP JSON encoding."""
    out: dict[str, Any] = {}
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        raw: Any
        if wire == 0:
            raw, at = _varint(data, at)
        elif wire == 1:
            raw, at = data[at : at + 8], at + 8
        elif wire == 5:
            raw, at = data[at : at + 4], at + 4
        elif wire == 2:
            length, at = _varint(data, at)
            raw, at = data[at : at + length], at + length
        else:
            raise ValueError(f"wire type {wire}")
        if number not in schema:
            continue
        name, kind, repeated, sub = schema[number]
        value: Any
        if kind == "message":
            value = decode(raw, sub)
        elif kind == "string":
            value = raw.decode()
        elif kind == "hex":
            value = raw.hex()
        elif kind == "bytes":
            import base64

            value = base64.b64encode(raw).decode()
        elif kind == "bool":
            value = bool(raw)
        elif kind == "int64":
            value = str(raw - (1 << 64) if raw >= 1 << 63 else raw)
        elif kind == "uint":
            value = raw
        elif kind == "fixed64":
            value = str(struct.unpack("<Q", raw)[0])
        elif kind == "fixed32":
            value = struct.unpack("<I", raw)[0]
        elif kind == "double":
            value = struct.unpack("<d", raw)[0]
        else:
            raise ValueError(kind)
        if repeated:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


class FileExporter:
    """An OTLP/HTTP endpoint on 127.0.0.1 that appends each trace export to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.batches = 0
        lock = threading.Lock()
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if body[:2] == b"\x1f\x8b":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    request = decode(body, TRACES_REQUEST)
                    with lock, exporter.path.open("a") as out:
                        out.write(json.dumps(request, separators=(",", ":")) + "\n")
                        exporter.batches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
