"""Reading OTLP JSON lines (the Collector file-exporter format) back in tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _value(attribute: dict[str, Any]) -> Any:
    value = attribute["value"]
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])
    return value


def attributes(item: dict[str, Any]) -> dict[str, Any]:
    """An OTLP JSON span's (or resource's, or point's) attributes as a plain dict."""
    return {a["key"]: _value(a) for a in item.get("attributes", [])}


def read_otlp(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(spans, metric data points) of an OTLP JSON lines file; each gets ``resource``,
    ``attrs`` and, for points, ``metric`` and ``temporality``."""
    spans: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        request = json.loads(line)
        for resource_spans in request.get("resourceSpans", []):
            resource = attributes(resource_spans.get("resource", {}))
            for scope in resource_spans["scopeSpans"]:
                for span in scope["spans"]:
                    spans.append({**span, "resource": resource, "attrs": attributes(span)})
        for resource_metrics in request.get("resourceMetrics", []):
            resource = attributes(resource_metrics.get("resource", {}))
            for scope in resource_metrics["scopeMetrics"]:
                for metric in scope["metrics"]:
                    kind = (
                        "sum"
                        if "sum" in metric
                        else "histogram"
                        if "histogram" in metric
                        else "gauge"
                    )
                    data = metric[kind]
                    for point in data["dataPoints"]:
                        points.append(
                            {
                                **point,
                                "metric": metric["name"],
                                "temporality": data.get("aggregationTemporality"),
                                "resource": resource,
                                "attrs": attributes(point),
                            }
                        )
    return spans, points


def total(points: list[dict[str, Any]], metric: str) -> int:
    """The sum of a counter's delta points."""
    return sum(int(p["asInt"]) for p in points if p["metric"] == metric)
