"""Synthetic OTLP JSON lines in the probe's shape, with answers known in advance.

Each invocation is one export request (one line), as ``otlp-file`` writes it: the
invocation span, and on an environment's first invocation its ``lambda.init`` span and
``lambda.import`` children in the same trace.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path
from typing import Any

T0_NS = 1_800_000_000_000_000_000
_ids = itertools.count(1)


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def attrs(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in values.items()]


def _hex(bits: int) -> str:
    return f"{next(_ids):0{bits // 4}x}"


def stale(
    idle_s: float,
    outcome: str,
    *,
    db_system: str | None = None,
    address: str = "10.0.0.5",
    port: int = 5432,
    created_in: str = "init",
    reconnect_s: float | None = None,
    time_ns: int | None = None,
) -> tuple[str, dict[str, Any], int | None]:
    attributes: dict[str, Any] = {}
    if db_system:
        attributes["db.system"] = db_system
    attributes.update({"server.address": address, "server.port": port})
    attributes.update(
        {
            "lifecycle.connection.idle_s": idle_s,
            "lifecycle.connection.age_s": idle_s + 1.0,
            "lifecycle.connection.created_in": created_in,
            "lifecycle.connection.outcome": outcome,
        }
    )
    if reconnect_s is not None:
        attributes["lifecycle.connection.reconnect_s"] = reconnect_s
    return ("lifecycle.connection.stale", attributes, time_ns)


def leak(module, name, first_seen_seq):
    return (
        "lifecycle.global.leak",
        {
            "code.namespace": module,
            "lifecycle.global.name": name,
            "lifecycle.global.first_seen_seq": first_seen_seq,
        },
        None,
    )


def hazard(module, name, kind):
    return (
        "lifecycle.snapstart.hazard",
        {
            "code.namespace": module,
            "lifecycle.global.name": name,
            "lifecycle.snapstart.hazard.kind": kind,
        },
        None,
    )


class Function:
    """Writes invocations of one function, environment by environment."""

    def __init__(self, name: str = "orders") -> None:
        self.name = name
        self.lines: list[str] = []
        self._seq: dict[str, int] = {}
        self._last_end: dict[str, int] = {}

    def invoke(
        self,
        env: str,
        at_s: float,
        duration_s: float = 0.01,
        *,
        start: str | None = None,
        outcome: str = "ok",
        init_s: float = 0.2,
        init_gap_s: float = 0.0,
        init_type: str = "on-demand",
        imports: tuple[tuple[str, float, str] | tuple[str, float, str, str], ...] = (),
        after_init_imports: tuple[tuple[str, float, str], ...] = (),
        events: tuple[tuple[str, dict[str, Any], int | None], ...] = (),
    ) -> None:
        seq = self._seq.get(env, 0) + 1
        self._seq[env] = seq
        start_ns = T0_NS + int(at_s * 1e9)
        end_ns = start_ns + int(duration_s * 1e9)
        if start is None:
            start = "cold" if seq == 1 else "warm"
        trace = _hex(128)
        invocation_id = _hex(64)
        attributes: dict[str, Any] = {
            "faas.coldstart": start in ("cold", "restored"),
            "faas.trigger": "other",
            "lifecycle.start": start,
            "lifecycle.invocation_seq": seq,
            "lifecycle.environment.id": env,
            "lifecycle.environment.age_s": 1.0,
            "lifecycle.init_type": init_type,
            "lifecycle.outcome": outcome,
            "faas.invocation_id": f"req-{env}-{seq}",
            "faas.name": self.name,
        }
        if seq > 1:
            attributes["lifecycle.idle_s"] = round((start_ns - self._last_end[env]) / 1e9, 6)
        self._last_end[env] = end_ns
        span_events = [
            {"timeUnixNano": str(time_ns or start_ns + 1000), "name": name, "attributes": attrs(a)}
            for name, a, time_ns in events
        ]
        status: dict[str, Any] = {}
        if outcome == "error":
            status = {"code": 2, "message": "ValueError"}
            span_events.append(
                {
                    "timeUnixNano": str(end_ns),
                    "name": "exception",
                    "attributes": attrs({"exception.type": "ValueError", "exception.message": ""}),
                }
            )
        elif outcome == "timeout":
            status = {"code": 2, "message": "timeout"}
        spans = [
            {
                "traceId": trace,
                "spanId": invocation_id,
                "flags": 256,
                "name": self.name,
                "kind": 2,
                "startTimeUnixNano": str(start_ns),
                "endTimeUnixNano": str(end_ns),
                "attributes": attrs(attributes),
                "events": span_events,
                "status": status,
            }
        ]
        if seq == 1:
            init_end = start_ns - int(init_gap_s * 1e9)
            init_start = init_end - int(init_s * 1e9)
            init_id = _hex(64)
            spans.append(
                {
                    "traceId": trace,
                    "spanId": init_id,
                    "parentSpanId": invocation_id,
                    "name": "lambda.init",
                    "kind": 1,
                    "startTimeUnixNano": str(init_start),
                    "endTimeUnixNano": str(init_end),
                    "attributes": attrs(
                        {
                            "lifecycle.environment.id": env,
                            "lifecycle.init_type": init_type,
                            "lifecycle.init.estimated": False,
                        }
                    ),
                    "status": {},
                }
            )
            cursor = init_start
            # (module, self_s, origin) under the INIT, or with a fourth item, the module
            # of an earlier import that imported it (its span's parent)
            span_of: dict[str, str] = {}
            for module, self_s, origin, *parent in imports:
                end = cursor + int(self_s * 1e9)
                parent_id = span_of[parent[0]] if parent else init_id
                span = self._import(trace, parent_id, module, self_s, origin, cursor, end)
                span_of[module] = span["spanId"]
                spans.append(span)
                cursor = end
        cursor = start_ns
        for module, self_s, origin in after_init_imports:
            end = cursor + int(self_s * 1e9)
            span = self._import(trace, invocation_id, module, self_s, origin, cursor, end)
            span["attributes"] += attrs({"lifecycle.import.after_init": True})
            spans.append(span)
            cursor = end
        request = {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": attrs({"service.name": self.name, "faas.name": self.name})
                    },
                    "scopeSpans": [{"scope": {"name": "lifecycle_probe"}, "spans": spans}],
                }
            ]
        }
        self.lines.append(json.dumps(request, separators=(",", ":")))

    def init_failure(self, env: str, at_s: float, error_type: str, init_s: float = 0.1) -> None:
        """A failed INIT: a ``lambda.init`` span of its own trace with error status."""
        end_ns = T0_NS + int(at_s * 1e9)
        span = {
            "traceId": _hex(128),
            "spanId": _hex(64),
            "name": "lambda.init",
            "kind": 1,
            "startTimeUnixNano": str(end_ns - int(init_s * 1e9)),
            "endTimeUnixNano": str(end_ns),
            "attributes": attrs(
                {
                    "lifecycle.environment.id": env,
                    "lifecycle.init_type": "on-demand",
                    "lifecycle.init.failed": True,
                    "error.type": error_type,
                }
            ),
            "status": {"code": 2, "message": error_type},
        }
        request = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [span]}]}]}
        self.lines.append(json.dumps(request, separators=(",", ":")))

    @staticmethod
    def _import(trace, parent, module, self_s, origin, start_ns, end_ns):
        return {
            "traceId": trace,
            "spanId": _hex(64),
            "parentSpanId": parent,
            "name": "lambda.import",
            "kind": 1,
            "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(end_ns),
            "attributes": attrs(
                {
                    "code.namespace": module,
                    "lifecycle.import.self_s": self_s,
                    "lifecycle.import.origin": origin,
                }
            ),
            "status": {},
        }

    def metrics_line(self) -> str:
        return json.dumps({"resourceMetrics": [{"resource": {}, "scopeMetrics": []}]})

    def write(self, path: Path, *, gz: bool = False) -> Path:
        text = "".join(line + "\n" for line in self.lines)
        if gz:
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
        return path


def emf_document(
    env,
    seq,
    start,
    *,
    end_ms,
    invoke_ms=12.0,
    idle_ms=None,
    init_ms=None,
    outcome="ok",
    stale_detected=0,
):
    """One EMF document in the shape of the probe's ``emf`` sink (sinks/emf.py)."""
    metrics = {
        "Invocations": 1.0,
        "InvocationSeq": float(seq),
        "InvokeDuration": invoke_ms,
        "Errors": float(outcome == "error"),
        "Timeouts": float(outcome == "timeout"),
    }
    if init_ms is not None:
        metrics["InitDuration"] = init_ms
    if idle_ms is not None:
        metrics["IdleDuration"] = idle_ms
    if stale_detected:
        metrics["StaleConnectionDetected"] = float(stale_detected)
    document = {
        "_aws": {
            "Timestamp": end_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": "LifecycleProbe",
                    "Dimensions": [["function_name"]],
                    "Metrics": [{"Name": n, "Unit": "Count"} for n in metrics],
                }
            ],
        },
        "function_name": "orders",
        **{name: [value] for name, value in metrics.items()},
        "lifecycle_probe": "metrics",
        "function_request_id": f"req-{env}-{seq}",
        "lifecycle_environment_id": env,
        "lifecycle_invocation_seq": seq,
        "lifecycle_start": start,
        "lifecycle_init_type": "on-demand",
        "lifecycle_outcome": outcome,
    }
    return json.dumps(document, separators=(",", ":"))
