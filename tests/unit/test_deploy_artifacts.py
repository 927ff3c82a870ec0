"""The deployment artifacts agree with what the probe emits.

- ``sam-template.yaml``: every metric its CloudWatch dashboard and its alarm name is in the
  EMF sink's metric table (``lifecycle_probe.sinks.emf.METRICS``), with the dimensions the
  sink gives every metric; the layers, functions and log groups are wired as documented,
  and each makefile build has its Makefile target.
- ``deploy/grafana-dashboard.json``: every metric a query names is the Prometheus name of an
  instrument the OTel sink exports (``lifecycle_probe.sinks.otel.metrics.INSTRUMENTS``),
  under the OTLP-to-Prometheus rules.
- ``deploy/collector.yaml``: parses, receives OTLP where the probe sends it, and forwards
  through ``batch`` and ``decouple``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifecycle_probe.sinks.emf import METRICS
from lifecycle_probe.sinks.otel.metrics import INSTRUMENTS

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "sam-template.yaml"
GRAFANA = ROOT / "deploy" / "grafana-dashboard.json"
COLLECTOR = ROOT / "deploy" / "collector.yaml"
LAYER_MAKEFILE = ROOT / "layer" / "Makefile"

# The dimensions the EMF sink puts on every metric (emf.py: function_name, and service
# from POWERTOOLS_SERVICE_NAME, which the template sets globally).
EMF_DIMENSIONS = {"function_name", "service"}
PYTHON_RUNTIMES = ["python3.10", "python3.11", "python3.12", "python3.13"]


# -- reading the template ---------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus CloudFormation's short-form tags (``!Ref``, ``!Sub``, ...),
    read as their long forms (``{"Ref": ...}``, ``{"Fn::Sub": ...}``)."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_form)


def load_template() -> dict[str, Any]:
    template: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    return template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def substituted(sub: Any, values: dict[str, str]) -> str:
    """The text of an ``Fn::Sub`` string with ``values`` for its variables; a variable
    without a value fails the test."""
    assert isinstance(sub, dict), f"expected !Sub, got {sub!r}"
    text = sub["Fn::Sub"]
    assert isinstance(text, str)
    names = set(re.findall(r"\$\{([^}]+)\}", text))
    missing = names - values.keys()
    assert not missing, f"variables without a test value: {sorted(missing)}"
    return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], text)


SUB_VALUES = {
    "AWS::Region": "us-east-1",
    "AWS::StackName": "stack",
    "MetricsNamespace": "LifecycleProbe",
    "ServiceName": "lifecycle-probe-examples",
}


def dashboard_body(template: dict[str, Any]) -> dict[str, Any]:
    (dashboard,) = resources_of(template, "AWS::CloudWatch::Dashboard").values()
    body: dict[str, Any] = json.loads(
        substituted(dashboard["Properties"]["DashboardBody"], SUB_VALUES)
    )
    return body


SEARCH = re.compile(r"SEARCH\('(?P<query>(?:[^'\\]|\\.)*)'\s*,\s*'(?P<stat>[^']+)'\s*,\s*(\d+)\)")
SCHEMA = re.compile(r"^\{(?P<schema>[^}]*)\}\s*(?P<terms>.*)$")


def search_metrics(expression: str) -> list[tuple[str, set[str], str]]:
    """(metric name, dimension names of the schema, statistic) of each SEARCH in a
    dashboard expression."""
    found = []
    for search in SEARCH.finditer(expression):
        query = search.group("query").replace('\\"', '"')
        schema = SCHEMA.match(query)
        assert schema, f"SEARCH without a {{namespace,dimensions}} schema: {query}"
        namespace, *dimensions = (part.strip() for part in schema.group("schema").split(","))
        assert namespace == SUB_VALUES["MetricsNamespace"], query
        names = re.findall(r'MetricName="([^"]+)"', schema.group("terms"))
        assert len(names) == 1, f"SEARCH must name exactly one metric: {query}"
        found.append((names[0], set(dimensions), search.group("stat")))
    return found


def dashboard_metrics(body: dict[str, Any]) -> dict[str, list[tuple[str, set[str], str]]]:
    """Widget title -> (metric, dimension names, statistic) of every metric it names, from
    SEARCH expressions or explicit [namespace, name, dimension, value, ...] rows."""
    named: dict[str, list[tuple[str, set[str], str]]] = {}
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        properties = widget["properties"]
        rows = named.setdefault(properties["title"], [])
        previous: list[Any] = []
        for row in properties["metrics"]:
            options = row[-1] if row and isinstance(row[-1], dict) else {}
            values = row[:-1] if options else row
            if "expression" in options:
                searches = search_metrics(options["expression"])
                bare = SEARCH.sub("", options["expression"])
                # every metric of the expression is in a SEARCH read above
                assert "SEARCH" not in bare, bare
                assert "SELECT" not in bare.upper(), bare
                rows.extend(searches)
            elif values:
                # "." repeats the value of the row before at that position.
                values = [previous[i] if v == "." else v for i, v in enumerate(values)]
                previous = values
                stat = options.get("stat", properties.get("stat", "Average"))
                rows.append((values[1], set(values[2::2]), stat))
    return named


# -- the CloudWatch dashboard and alarm -------------------------------------------------------


def test_every_dashboard_metric_is_one_the_emf_sink_emits(template):
    named = dashboard_metrics(dashboard_body(template))
    assert named, "the dashboard names no metric"
    for title, metrics in named.items():
        assert metrics, f"widget {title!r} names no metric"
        for metric, dimensions, _ in metrics:
            assert metric in METRICS, f"{title!r}: {metric} is not in emf.METRICS"
            # SEARCH matches the exact dimension set the sink puts on its metrics
            assert dimensions == EMF_DIMENSIONS, f"{title!r}: {metric} by {dimensions}"


def test_dashboard_covers_the_lifecycle(template):
    named = dashboard_metrics(dashboard_body(template))
    by_title = {title: {metric for metric, _, _ in metrics} for title, metrics in named.items()}
    everything = set().union(*by_title.values())
    starts = {name for name in METRICS if name.startswith("Start")}
    assert starts == {
        "StartCold",
        "StartWarm",
        "StartProvisioned",
        "StartProactive",
        "StartRestored",
    }
    stale = {name for name in METRICS if name.startswith("StaleConnection")}
    assert len(stale) == 3
    required = {
        "Invocations",
        "InitDuration",
        "InvocationSeq",
        "IdleDuration",
        "Errors",
        "Timeouts",
    }
    assert required | starts | stale <= everything
    # the cold-start ratio is metric math over what the probe always writes itself, in its
    # own namespace (not ColdStart, which Powertools may write in the function's)
    (ratio,) = [t for t in named if t.startswith("Cold-start ratio")]
    assert by_title[ratio] == {"StartCold", "StartRestored", "Invocations"}
    widget = next(
        w for w in dashboard_body(template)["widgets"] if w["properties"].get("title") == ratio
    )
    rows = {row[0]["id"]: row[0] for row in widget["properties"]["metrics"]}
    shown = [row for row in rows.values() if row.get("visible", True)]
    (expression,) = [row["expression"] for row in shown]
    # warm-only periods have no StartCold point: FILL makes them 0, not a gap
    assert expression == ("100 * (FILL(SUM(cold), 0) + FILL(SUM(restored), 0)) / SUM(invocations)")
    # percentiles and max where the brief asks for them
    stats = {(m, s) for metrics in named.values() for m, _, s in metrics}
    assert {("InitDuration", "p50"), ("InitDuration", "p99")} <= stats
    assert {("InvocationSeq", "Maximum"), ("InvocationSeq", "p50")} <= stats


def test_dashboard_units_match_the_metric_table(template):
    for title, metrics in dashboard_metrics(dashboard_body(template)).items():
        for metric, _, stat in metrics:
            unit = METRICS[metric][0]
            if "(ms)" in title:
                assert unit == "Milliseconds", f"{title!r}: {metric} is in {unit}"
            if unit == "Count" and metric != "InvocationSeq":
                # counts are summed: an average of 0/1 flags says nothing per period
                assert stat == "Sum", f"{title!r}: {metric} as {stat}"


def test_cold_start_alarm_is_metric_math_over_emitted_metrics(template):
    (alarm,) = resources_of(template, "AWS::CloudWatch::Alarm").values()
    properties = alarm["Properties"]
    queries = {query["Id"]: query for query in properties["Metrics"]}
    (returned,) = [q for q in queries.values() if q.get("ReturnData")]
    expression = returned["Expression"]
    stats = {qid: q["MetricStat"] for qid, q in queries.items() if "MetricStat" in q}
    by_metric = {s["Metric"]["MetricName"]: qid for qid, s in stats.items()}
    # the probe's own start metrics: cold and restored starts (faas.coldstart) over
    # invocations, each missing point (no cold start in the period) filled with 0
    assert set(by_metric) == {"StartCold", "StartRestored", "Invocations"}
    cold, restored, calls = (by_metric[m] for m in ("StartCold", "StartRestored", "Invocations"))
    assert expression == (
        f"IF({calls} > 0, 100 * (FILL({cold}, 0) + FILL({restored}, 0)) / {calls}, 0)"
    )
    for stat in stats.values():
        metric = stat["Metric"]
        assert metric["MetricName"] in METRICS
        assert stat["Stat"] == "Sum"
        assert metric["Namespace"] == {"Ref": "MetricsNamespace"}
        dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        assert set(dimensions) == EMF_DIMENSIONS
        assert dimensions["function_name"] == {"Ref": "ZeroCodeFunction"}
        assert dimensions["service"] == {"Ref": "ServiceName"}
    assert properties["Threshold"] == {"Ref": "ColdStartRatioThreshold"}
    assert properties["TreatMissingData"] == "notBreaching"


def test_a_collector_needs_an_endpoint_and_gets_otlp(template):
    # a collector with no backend endpoint would forward to "": the template refuses it
    rule = template["Rules"]["CollectorNeedsAnEndpoint"]
    assert rule["RuleCondition"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "CollectorLayerArn"}, ""]}]
    }
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OtlpEndpoint"}, ""]}]}
    # with a collector the functions export otlp to it, besides the Exporter list
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["LIFECYCLE_PROBE_EXPORTER"] == {
        "Fn::If": ["AddOtlpForCollector", {"Fn::Sub": "${Exporter},otlp"}, {"Ref": "Exporter"}]
    }
    conditions = template["Conditions"]
    assert conditions["AddOtlpForCollector"] == {
        "Fn::And": [
            {"Fn::Condition": "HasCollector"},
            {"Fn::Not": [{"Fn::Condition": "ExporterHasOtlp"}]},
        ]
    }
    # ExporterHasOtlp: ",<list>," split on ",otlp," leaves a shorter first part
    (has,) = conditions["ExporterHasOtlp"]["Fn::Not"]
    select, whole = has["Fn::Equals"]
    assert whole == {"Fn::Sub": ",${Exporter},"}
    assert select == {"Fn::Select": [0, {"Fn::Split": [",otlp,", whole]}]}

    def has_otlp(exporter: str) -> bool:  # the condition, evaluated
        text = f",{exporter},"
        return text.split(",otlp,")[0] != text

    assert [has_otlp(e) for e in ("otlp", "emf,otlp", "otlp,emf", "emf", "otlp-file")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_powertools_variables_set_globally_give_the_dashboard_its_dimensions(template):
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == {"Ref": "ServiceName"}
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    assert variables["LIFECYCLE_PROBE_EXPORTER"]["Fn::If"][2] == {"Ref": "Exporter"}
    defaults = {name: p.get("Default") for name, p in template["Parameters"].items()}
    assert defaults["MetricsNamespace"] == SUB_VALUES["MetricsNamespace"]
    assert defaults["ServiceName"] == SUB_VALUES["ServiceName"]
    assert defaults["Exporter"] == "emf"
    assert {"Exporter", "OtlpEndpoint", "CollectorLayerArn"} <= defaults.keys()


# -- the template's layers and functions ------------------------------------------------------


def makefile_targets(path: Path) -> set[str]:
    targets: set[str] = set()
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_. -]+):(?!=)", line)
        if match:
            targets.update(match.group(1).split())
    return targets


def test_layers_are_built_by_the_layer_makefile(template):
    layers = resources_of(template, "AWS::Serverless::LayerVersion")
    architectures = set()
    targets = makefile_targets(LAYER_MAKEFILE)
    for name, layer in layers.items():
        properties, metadata = layer["Properties"], layer["Metadata"]
        assert metadata["BuildMethod"] == "makefile"
        assert properties["ContentUri"] == "layer/"
        assert properties["CompatibleRuntimes"] == PYTHON_RUNTIMES
        assert properties["CompatibleArchitectures"] == [metadata["BuildArchitecture"]]
        architectures.add(metadata["BuildArchitecture"])
        assert f"build-{name}" in targets
    assert architectures == {"x86_64", "arm64"}


def test_functions_build_wire_and_log(template):
    functions = resources_of(template, "AWS::Serverless::Function")
    log_groups = resources_of(template, "AWS::Logs::LogGroup")
    targets = makefile_targets(ROOT / "examples" / "sam" / "Makefile")
    assert len(functions) == 4
    for name, function in functions.items():
        properties = function["Properties"]
        code = ROOT / properties["CodeUri"]
        module, _ = properties["Handler"].rsplit(".", 1)
        assert (code / f"{module}.py").is_file(), f"{name}: no {module}.py in {code}"
        assert function["Metadata"] == {"BuildMethod": "makefile", "ContextPath": "examples/sam"}
        assert f"build-{name}" in targets
        group = properties["LoggingConfig"]["LogGroup"]["Ref"]
        assert log_groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    # every log group belongs to a function
    used = {f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for f in functions.values()}
    assert used == set(log_groups)
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] in PYTHON_RUNTIMES
    assert globals_["Layers"][0] == {
        "Fn::If": [
            "IsArm64",
            {"Ref": "LifecycleProbeLayerArm64"},
            {"Ref": "LifecycleProbeLayerX86"},
        ]
    }
    zero_code = functions["ZeroCodeFunction"]["Properties"]
    assert zero_code["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"] == (
        "/opt/lifecycle-probe"
    )
    snap = functions["SnapStartFunction"]["Properties"]
    assert snap["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert snap["AutoPublishAlias"]
    # SnapStart for Python needs python3.12 or later
    assert PYTHON_RUNTIMES.index(globals_["Runtime"]) >= PYTHON_RUNTIMES.index("python3.12")
    connection = functions["ConnectionFunction"]["Properties"]["Environment"]["Variables"]
    for variable, parameter in (
        ("DB_HOST", "DatabaseHost"),
        ("DB_PORT", "DatabasePort"),
        ("DB_USER", "DatabaseUser"),
        ("DB_NAME", "DatabaseName"),
    ):
        assert connection[variable] == {"Ref": parameter}
        assert parameter in template["Parameters"]


def test_short_form_tags_are_read_as_long_forms():
    loaded = yaml.load(
        "a: !Ref X\nb: !GetAtt F.Arn\nc: !Sub 'x${Y}'\nd: !If [C, !Ref A, !Ref AWS::NoValue]\n"
        "e: !Join ['', !Ref L]\n",
        Loader=CfnLoader,
    )
    assert loaded == {
        "a": {"Ref": "X"},
        "b": {"Fn::GetAtt": ["F", "Arn"]},
        "c": {"Fn::Sub": "x${Y}"},
        "d": {"Fn::If": ["C", {"Ref": "A"}, {"Ref": "AWS::NoValue"}]},
        "e": {"Fn::Join": ["", {"Ref": "L"}]},
    }


# -- the Grafana dashboard --------------------------------------------------------------------

# OTLP-to-Prometheus unit suffixes (the collector's and Prometheus's translation rules);
# units in braces are annotations and give no suffix.
UNIT_SUFFIXES = {
    "s": "seconds",
    "ms": "milliseconds",
    "By": "bytes",
    "MiBy": "mebibytes",
    "1": "ratio",
}
# Metric attributes the OTel sink sets (DESIGN.md §2), plus histogram buckets and the
# labels the backend derives from the resource (service.name -> job).
KNOWN_LABELS = {
    "le",
    "job",
    "instance",
    "faas_trigger",
    "lifecycle_init_type",
    "lifecycle_start",
    "db_system",
    "lifecycle_connection_outcome",
    "error_type",
}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def prometheus_names(name: str, unit: str, bounds: tuple[float, ...] | None) -> dict[str, str]:
    """Prometheus series name -> OTel instrument name, for one instrument."""
    base = re.sub(r"[^A-Za-z0-9_:]", "_", name)
    if unit and not unit.startswith("{"):
        suffix = UNIT_SUFFIXES[unit]  # a new unit: teach the test its suffix
        if not base.endswith(f"_{suffix}"):
            base = f"{base}_{suffix}"
    if bounds is None:
        return {f"{base}_total": name}
    return {f"{base}_{part}": name for part in ("bucket", "sum", "count")}


def exported_prometheus_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for name, unit, bounds in INSTRUMENTS:
        names.update(prometheus_names(name, unit, bounds))
    return names


def test_prometheus_name_rules():
    assert prometheus_names("faas.invocations", "{invocation}", None) == {
        "faas_invocations_total": "faas.invocations"
    }
    assert set(prometheus_names("faas.init_duration", "s", (1.0,))) == {
        "faas_init_duration_seconds_bucket",
        "faas_init_duration_seconds_sum",
        "faas_init_duration_seconds_count",
    }
    assert "faas_mem_usage_bytes_bucket" in prometheus_names("faas.mem_usage", "By", (1.0,))


def promql_metrics_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL expression uses."""
    labels: set[str] = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels.update(label.strip() for label in grouping.split(",") if label.strip())
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors, [$__rate_interval]
    metrics = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        metrics.add(word)
    return metrics, labels


def test_promql_reader():
    metrics, labels = promql_metrics_and_labels(
        'histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket{job=~"$s"}[5m]))) '
        "/ on (job) sum without (a, b) (y_total) > bool 0"
    )
    assert metrics == {"x_seconds_bucket", "y_total"}
    assert labels == {"le", "job", "a", "b"}


def grafana_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return panels


def test_every_grafana_query_names_metrics_the_probe_exports():
    dashboard = json.loads(GRAFANA.read_text())
    exported = exported_prometheus_names()
    used: set[str] = set()
    for panel in grafana_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            metrics, labels = promql_metrics_and_labels(target["expr"])
            assert metrics, f"{panel['title']!r}: no metric in {target['expr']}"
            unknown = metrics - exported.keys()
            assert not unknown, f"{panel['title']!r}: not exported by the probe: {unknown}"
            assert labels <= KNOWN_LABELS, f"{panel['title']!r}: labels {labels - KNOWN_LABELS}"
            used |= {exported[m] for m in metrics}
    # the panels cover the lifecycle
    assert {
        "faas.invocations",
        "faas.coldstarts",
        "faas.init_duration",
        "lifecycle.starts",
        "lifecycle.invocation_seq",
        "lifecycle.idle_duration",
        "lifecycle.connection.stale",
        "faas.errors",
        "faas.timeouts",
    } <= used
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    values = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variables["service"]["definition"])
    assert values, variables["service"]["definition"]
    assert values.group(1) in exported
    assert values.group(2) in KNOWN_LABELS


def test_grafana_panel_units_match_the_instruments():
    dashboard = json.loads(GRAFANA.read_text())
    exported = exported_prometheus_names()
    units = {name: unit for name, unit, _ in INSTRUMENTS}
    for panel in grafana_panels(dashboard):
        unit = panel["fieldConfig"]["defaults"]["unit"]
        for target in panel["targets"]:
            metrics, _ = promql_metrics_and_labels(target["expr"])
            instrument_units = {units[exported[m]] for m in metrics}
            if unit == "s":
                assert instrument_units == {"s"}, (panel["title"], instrument_units)
            if unit == "bytes" and "quantile" in target["expr"]:
                assert instrument_units == {"By"}, (panel["title"], instrument_units)


# -- the Grafana queries on per-environment series --------------------------------------------
# A small model of what Prometheus stores and computes. Each execution environment exports
# its own cumulative series (service.instance.id -> instance); a series begins at its first
# value (faas.coldstarts at 1, and it never grows). Evaluated here as Prometheus does:
# increase() with its extrapolation (extrapolatedRate), instant selectors with the 5 minute
# lookback, offset, and/or/unless matching on the labels.

STEP_S = 60  # scrape (or export) interval
WINDOW_S = 300  # $__rate_interval
LOOKBACK_S = 300

Series = dict[tuple[str, ...], list[tuple[float, float]]]  # labels -> [(t, value)]


def prometheus_increase(
    samples: list[tuple[float, float]], t: float, window: float
) -> float | None:
    """``increase(x[window])`` at ``t`` for one counter series (no resets), or None."""
    inside = [(ts, v) for ts, v in samples if t - window < ts <= t]
    if len(inside) < 2:
        return None  # one point: no increase (the environment's first value is lost)
    (first_t, first_v), (last_t, last_v) = inside[0], inside[-1]
    result = last_v - first_v
    sampled = last_t - first_t
    average = sampled / (len(inside) - 1)
    to_start, to_end = first_t - (t - window), t - last_t
    if result > 0 and first_v >= 0:  # a counter does not extrapolate below zero
        to_start = min(to_start, sampled * (first_v / result))
    threshold = average * 1.1
    extend = sampled
    extend += to_start if to_start < threshold else average / 2
    extend += to_end if to_end < threshold else average / 2
    return result * extend / sampled


def instant(samples: list[tuple[float, float]], t: float) -> float | None:
    before = [v for ts, v in samples if t - LOOKBACK_S < ts <= t]
    return before[-1] if before else None


def old_form(series: Series, t: float) -> float:
    """``sum(increase(x[w]))``: what the dashboard computed before."""
    values = [prometheus_increase(s, t, WINDOW_S) for s in series.values()]
    return sum(v for v in values if v is not None)


def new_form(series: Series, t: float) -> float:
    """``sum((increase(x[w]) and x offset w) or (x unless x offset w))``."""
    total = 0.0
    for samples in series.values():
        existed = instant(samples, t - WINDOW_S) is not None
        now = instant(samples, t)
        if existed:
            total += prometheus_increase(samples, t, WINDOW_S) or 0.0
        elif now is not None:
            total += now  # new in the window: it started from 0 inside it
    return total


def environments(starts_s: list[float], invocations_each: int, until_s: float):
    """Per-environment series of faas.coldstarts, faas.invocations and the INIT histogram's
    bucket below 0.25 s (each INIT took 0.2 s): one invocation per step from the start."""
    cold: Series = {}
    calls: Series = {}
    init_fast: Series = {}
    for n, start in enumerate(starts_s):
        times = [
            start + STEP_S * i for i in range(invocations_each) if start + STEP_S * i <= until_s
        ]
        cold[(f"env{n}",)] = [(ts, 1.0) for ts in times]
        calls[(f"env{n}",)] = [(ts, float(i + 1)) for i, ts in enumerate(times)]
        init_fast[(f"env{n}",)] = [(ts, 1.0) for ts in times]
    return cold, calls, init_fast


def test_grafana_query_form_counts_each_environments_first_point():
    # GIVEN three environments starting in the window, each invoked every minute after
    t = 1000.0
    cold, calls, init_fast = environments([760.0, 820.0, 880.0], 10, t)
    # THEN the cold starts are all three, and the invocations all there were
    assert new_form(cold, t) == 3
    invocations = sum(len(s) for s in calls.values())
    assert invocations == 5 + 4 + 3  # one a minute: 760..1000, 820..1000, 880..1000
    assert new_form(calls, t) == 12
    assert new_form(cold, t) / new_form(calls, t) == pytest.approx(0.25)
    # and the INIT histogram has its three observations: a quantile, not NaN
    assert new_form(init_fast, t) == 3
    # the old form saw no cold start and no INIT observation at all
    assert old_form(cold, t) == 0
    assert old_form(init_fast, t) == 0


def test_grafana_query_form_takes_only_the_increase_of_older_environments():
    # GIVEN environments started long before the window: their coldstarts stay at 1
    t = 2000.0
    cold, calls, _ = environments([100.0, 160.0], 40, t)
    # THEN no cold start in the window, and the invocations are the increase of the window
    assert new_form(cold, t) == 0
    assert new_form(calls, t) == pytest.approx(old_form(calls, t))
    assert new_form(calls, t) == pytest.approx(2 * WINDOW_S / STEP_S)


COUNTED = re.compile(
    r"\(increase\((?P<m>\w+)\{job=~\"\$service\"\}\[\$__rate_interval\]\) and (?P=m)"
    r"\{job=~\"\$service\"\} offset \$__rate_interval\) or \((?P=m)\{job=~\"\$service\"\}"
    r" unless (?P=m)\{job=~\"\$service\"\} offset \$__rate_interval\)"
)


def test_every_grafana_query_counts_new_series_as_simulated():
    dashboard = json.loads(GRAFANA.read_text())
    for panel in grafana_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            metrics, _ = promql_metrics_and_labels(expr)
            counted = {m.group("m") for m in COUNTED.finditer(expr)}
            # every metric is read in the simulated form, and in no other
            assert counted == metrics, (panel["title"], expr)
            assert "rate(" not in expr.replace("increase(", "")
            assert len(re.findall(r"\bincrease\(", expr)) == len(COUNTED.findall(expr))
    assert "service.instance.id" in dashboard["description"]
    assert "unless" in dashboard["description"]


# -- the collector configuration --------------------------------------------------------------


def test_collector_config_forwards_otlp_through_decouple():
    config = yaml.safe_load(COLLECTOR.read_text())
    protocols = config["receivers"]["otlp"]["protocols"]
    # the probe's default OTLP/HTTP endpoint is http://localhost:4318
    assert protocols["http"]["endpoint"] == "localhost:4318"
    assert protocols["grpc"]["endpoint"] == "localhost:4317"
    assert "decouple" in config["processors"]
    assert "batch" in config["processors"]
    exporter = config["exporters"]["otlphttp"]
    assert re.fullmatch(r"\$\{env:[A-Z_]+\}", exporter["endpoint"])
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] == ["otlp"], name
        # decouple last, so nothing after it holds the invocation up
        assert pipeline["processors"][-1] == "decouple", name
        assert "batch" in pipeline["processors"], name
        assert pipeline["exporters"] == ["otlphttp"], name
        for component in pipeline["processors"]:
            assert component in config["processors"]


def test_template_points_functions_with_the_collector_at_its_config(template):
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["OPENTELEMETRY_COLLECTOR_CONFIG_URI"]["Fn::If"][:2] == [
        "HasCollector",
        "/var/task/collector.yaml",
    ]
    endpoint_variable = re.fullmatch(
        r"\$\{env:([A-Z_]+)\}",
        yaml.safe_load(COLLECTOR.read_text())["exporters"]["otlphttp"]["endpoint"],
    )
    assert endpoint_variable
    assert variables[endpoint_variable.group(1)]["Fn::If"][:2] == [
        "HasCollector",
        {"Ref": "OtlpEndpoint"},
    ]
    assert (
        'cp -p "$(PROJECT)/deploy/collector.yaml"'
        in (ROOT / "examples" / "sam" / "Makefile").read_text()
    )
