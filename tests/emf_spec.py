"""The CloudWatch Embedded Metric Format specification, as checks a test can run.

Written from the specification's rules (CloudWatch User Guide, "Specification: Embedded
metric format"), not from Powertools' code, so that a document Powertools accepts but
CloudWatch would drop still fails here.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

MAX_METRICS = 100  # metric definitions per directive, and values per metric
MAX_DIMENSIONS = 30  # dimension names per dimension set
MAX_VALUES = 100
# The units CloudWatch accepts (MetricDatum.Unit).
UNITS = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)
NAMESPACE = re.compile(r"^[0-9A-Za-z.\-_/#: ]{1,255}$")
# A document's timestamp may be up to two weeks old and two hours ahead.
PAST_S, FUTURE_S = 14 * 24 * 3600, 2 * 3600


def emf_problems(document: Any, now_s: float | None = None) -> list[str]:
    """Every way ``document`` breaks the EMF specification (empty when it is valid)."""
    problems: list[str] = []
    if not isinstance(document, dict):
        return ["the document is not a JSON object"]
    aws = document.get("_aws")
    if not isinstance(aws, dict):
        return ["no _aws object"]
    timestamp = aws.get("Timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        problems.append(f"_aws.Timestamp is not an integer of milliseconds: {timestamp!r}")
    else:
        now = time.time() if now_s is None else now_s
        if not now - PAST_S <= timestamp / 1000 <= now + FUTURE_S:
            problems.append(f"_aws.Timestamp {timestamp} is out of CloudWatch's window")
    directives = aws.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return [*problems, "_aws.CloudWatchMetrics is not a non-empty array"]
    for directive in directives:
        problems += _directive_problems(document, directive)
    return problems


def _directive_problems(document: dict[str, Any], directive: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(directive, dict):
        return ["a metric directive is not an object"]
    namespace = directive.get("Namespace")
    if not isinstance(namespace, str) or not NAMESPACE.match(namespace) or not namespace.strip():
        problems.append(f"bad namespace {namespace!r}")
    elif namespace.startswith("AWS/"):
        problems.append(f"namespace {namespace!r} is reserved for AWS")
    dimension_sets = directive.get("Dimensions")
    if not isinstance(dimension_sets, list):
        problems.append("Dimensions is not an array")
        dimension_sets = []
    for dimension_set in dimension_sets:
        if not isinstance(dimension_set, list) or len(dimension_set) > MAX_DIMENSIONS:
            problems.append(f"dimension set {dimension_set!r} is not an array of <= 30 names")
            continue
        for name in dimension_set:
            value = document.get(name)
            if not isinstance(name, str) or not 1 <= len(name) <= 255:
                problems.append(f"bad dimension name {name!r}")
            elif not isinstance(value, str) or not 1 <= len(value) <= 1024 or not value.strip():
                problems.append(f"dimension {name!r} has no string value in the document")
    metrics = directive.get("Metrics")
    if not isinstance(metrics, list) or not metrics:
        return [*problems, "Metrics is not a non-empty array"]
    if len(metrics) > MAX_METRICS:
        problems.append(f"{len(metrics)} metrics in one directive (at most {MAX_METRICS})")
    for metric in metrics:
        problems += _metric_problems(document, metric)
    return problems


def _metric_problems(document: dict[str, Any], metric: Any) -> list[str]:
    if not isinstance(metric, dict):
        return ["a metric definition is not an object"]
    problems: list[str] = []
    name = metric.get("Name")
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        return [f"bad metric name {name!r}"]
    unit = metric.get("Unit", "None")
    if unit not in UNITS:
        problems.append(f"{name}: unit {unit!r} is not one CloudWatch accepts")
    resolution = metric.get("StorageResolution", 60)
    if resolution not in (1, 60):
        problems.append(f"{name}: StorageResolution {resolution!r} is neither 1 nor 60")
    value = document.get(name)
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > MAX_VALUES:
        problems.append(f"{name}: {len(values)} values (1 to {MAX_VALUES})")
    for item in values:
        if not isinstance(item, (int, float)) or isinstance(item, bool) or item != item:
            problems.append(f"{name}: value {item!r} is not a number")
    return problems


def is_emf(line: str) -> bool:
    """Whether a log line is an EMF document."""
    return line.startswith("{") and '"_aws"' in line


def metric_values(document: dict[str, Any]) -> dict[str, list[float]]:
    """Metric name -> its values, for every metric a document defines."""
    found: dict[str, list[float]] = {}
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for metric in directive["Metrics"]:
            value = document[metric["Name"]]
            found[metric["Name"]] = [
                float(v) for v in (value if isinstance(value, list) else [value])
            ]
    return found


def dimension_sets(document: dict[str, Any]) -> list[frozenset[tuple[str, str]]]:
    """Each dimension set of the document, with its values."""
    return [
        frozenset((name, document[name]) for name in dimension_set)
        for directive in document["_aws"]["CloudWatchMetrics"]
        for dimension_set in directive["Dimensions"]
    ]


def namespace(document: dict[str, Any]) -> str:
    """The namespace of a document's (single) directive."""
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    name: str = directive["Namespace"]
    return name


def json_lines(log_text: str) -> list[dict[str, Any]]:
    """Every JSON object line of a log (fails the test on a line that starts like JSON but
    is not)."""
    found = []
    for line in log_text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found
