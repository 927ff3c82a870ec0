"""What arrived, per request and per environment: OTLP JSON export requests tallied as
they come (from the soak's collector, or read back from an ``otlp-file``).

Only what the soak's accounting needs is kept, so that tens of thousands of invocations
fit: the request ids of invocation spans (with their environment and start tag), the
environments whose failed INIT was exported, and counter sums per environment
(``faas.invocations``, ``lifecycle.telemetry.dropped`` by signal and reason,
``faas.init_errors``). A resent export (after a failure whose reply was lost) carries the
same points: they are counted once, keyed by metric, environment, attributes and interval.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

COUNTERS = ("faas.invocations", "lifecycle.telemetry.dropped", "faas.init_errors")
_ERROR_CODES = (2, "STATUS_CODE_ERROR")


def _value(attribute: dict[str, Any]) -> Any:
    value = attribute.get("value", {})
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])
    return None


def _attributes(item: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: _value(a) for a in item.get("attributes", [])}


class OtlpTally:
    """Thread-safe tally of OTLP JSON export requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # request id -> (faas.instance, lifecycle.start, lifecycle.outcome)
        self.invocations: dict[str, tuple[str, str | None, str | None]] = {}
        self.span_copies = 0
        # faas.instance of every environment whose failed INIT span arrived
        self.init_failures: set[str] = set()
        self._points: set[tuple[Any, ...]] = set()
        # (faas.instance, metric, signal, reason) -> sum
        self.sums: Counter[tuple[str, str, str, str]] = Counter()
        self.requests: Counter[str] = Counter()
        self.bad_requests = 0

    def add_body(self, path: str, body: bytes) -> None:
        try:
            request = json.loads(body)
        except ValueError:
            with self._lock:
                self.bad_requests += 1
            return
        self.add(path, request)

    def add(self, path: str, request: Any) -> None:
        if not isinstance(request, dict):
            with self._lock:
                self.bad_requests += 1
            return
        with self._lock:
            self.requests[path] += 1
            for resource_spans in request.get("resourceSpans", []):
                instance = str(
                    _attributes(resource_spans.get("resource", {})).get("faas.instance", "")
                )
                for scope in resource_spans.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        self._span(instance, span)
            for resource_metrics in request.get("resourceMetrics", []):
                instance = str(
                    _attributes(resource_metrics.get("resource", {})).get("faas.instance", "")
                )
                for scope in resource_metrics.get("scopeMetrics", []):
                    for metric in scope.get("metrics", []):
                        if metric.get("name") in COUNTERS:
                            self._counter(instance, metric)

    def _span(self, instance: str, span: dict[str, Any]) -> None:
        attrs = _attributes(span)
        request_id = attrs.get("faas.invocation_id")
        if request_id is not None:
            self.span_copies += 1
            self.invocations[str(request_id)] = (
                instance,
                attrs.get("lifecycle.start"),
                attrs.get("lifecycle.outcome"),
            )
        elif (
            span.get("name") == "lambda.init" and span.get("status", {}).get("code") in _ERROR_CODES
        ):
            self.init_failures.add(instance)

    def _counter(self, instance: str, metric: dict[str, Any]) -> None:
        name = metric["name"]
        for point in metric.get("sum", {}).get("dataPoints", []):
            attrs = _attributes(point)
            key = (
                instance,
                name,
                tuple(sorted(attrs.items())),
                point.get("startTimeUnixNano"),
                point.get("timeUnixNano"),
            )
            if key in self._points:
                continue
            self._points.add(key)
            value = int(point.get("asInt", 0) or 0)
            self.sums[
                (instance, name, str(attrs.get("signal", "")), str(attrs.get("reason", "")))
            ] += value

    def total(self, metric: str, instance: str | None = None, signal: str | None = None) -> int:
        """A counter's sum, for one environment and signal if given."""
        with self._lock:
            return sum(
                value
                for (inst, name, sig, _), value in self.sums.items()
                if name == metric
                and (instance is None or inst == instance)
                and (signal is None or sig == signal)
            )

    def dropped_by_reason(self) -> dict[str, int]:
        """``lifecycle.telemetry.dropped`` summed by ``signal/reason``."""
        found: Counter[str] = Counter()
        with self._lock:
            for (_, name, signal, reason), value in self.sums.items():
                if name == "lifecycle.telemetry.dropped":
                    found[f"{signal}/{reason}"] += value
        return dict(found)


def tally_file(path: Path) -> OtlpTally:
    """The tally of an OTLP JSON lines file (a torn or garbled line is counted as bad)."""
    tally = OtlpTally()
    if not path.exists():
        return tally
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                tally.add_body("file", line)
    return tally
