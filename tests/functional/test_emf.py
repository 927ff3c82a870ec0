"""The ``emf`` exporter in-process: documents valid by the EMF specification, the metric
table, namespace and service, and ColdStart counted once beside Powertools' own."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from typing import Any

import pytest

from lifecycle_probe import probe
from lifecycle_probe.config import Config
from lifecycle_probe.environment import current_environment
from lifecycle_probe.records import LifecycleEvent
from lifecycle_probe.sinks.emf import METRICS, EmfSink
from lifecycle_probe.testing import FakeContext, fresh_environment
from tests.emf_spec import dimension_sets, emf_problems, is_emf, metric_values, namespace

FUNCTION_ENV = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"}


@pytest.fixture(autouse=True)
def clean_variables(monkeypatch):
    """No LIFECYCLE_PROBE_*, OTEL_* or POWERTOOLS_* variable from the outside."""
    import os

    for name in list(os.environ):
        if name.startswith(("LIFECYCLE_PROBE_", "OTEL_", "POWERTOOLS_", "AWS_LAMBDA_")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)


def emf_documents(text):
    documents = [json.loads(line) for line in text.splitlines() if is_emf(line)]
    for document in documents:
        assert emf_problems(document) == []
    return documents


def run(handler, events, capsys):
    capsys.readouterr()
    outcomes = []
    for event in events:
        try:
            outcomes.append(handler(event, FakeContext(function_name="orders")))
        except ValueError as exc:
            outcomes.append(exc)
    return outcomes, emf_documents(capsys.readouterr().out)


def plain(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    for outcome in event.get("stale", ()):
        current_environment().add_event(
            LifecycleEvent(
                "lifecycle.connection.stale", 1, (("lifecycle.connection.outcome", outcome),)
            )
        )
    if event.get("leak"):
        current_environment().add_event(LifecycleEvent("lifecycle.global.leak", 1, ()))
    return {"ok": True}


def test_default_configuration_writes_valid_emf_on_the_first_invocation(capsys):
    # GIVEN no LIFECYCLE_PROBE_*, no OTEL_* variable: the default exporter
    fresh_environment(environ=FUNCTION_ENV)
    handler = probe(plain)
    # WHEN the first invocation returns
    (result,), (document,) = run(handler, [{}], capsys)
    # THEN one valid EMF document, in the default namespace, with the function's name
    assert result == {"ok": True}
    assert namespace(document) == "LifecycleProbe"
    assert dimension_sets(document) == [frozenset({("function_name", "orders")})]
    values = metric_values(document)
    assert values["Invocations"] == [1.0]
    assert values["ColdStart"] == [1.0]
    assert values["StartCold"] == [1.0]
    assert values["InitDuration"] == [pytest.approx(250.0, abs=1.0)]
    assert values["InvocationSeq"] == [1.0]
    assert values["Errors"] == [0.0]
    assert values["Timeouts"] == [0.0]
    assert "IdleDuration" not in values
    # and the metadata a Logs Insights query joins on, never the event
    assert document["lifecycle_start"] == "cold"
    assert document["function_request_id"] == FakeContext().aws_request_id
    assert document["lifecycle_environment_id"] == current_environment().environment_id


@pytest.mark.parametrize(
    ("setup", "start", "cold_start"),
    [
        ({}, "cold", True),
        ({"start": "provisioned"}, "provisioned", False),
        ({"start": "proactive"}, "proactive", False),
        ({"start": "restored"}, "restored", True),
    ],
)
def test_each_start_type_has_its_metric_and_coldstart_only_where_powertools_counts_one(
    capsys, setup, start, cold_start
):
    environment = fresh_environment(environ=FUNCTION_ENV, **setup)
    if start == "restored":
        environment.mark_restored()
    handler = probe(plain)
    _, (first, second) = run(handler, [{}, {}], capsys)
    first_values, second_values = metric_values(first), metric_values(second)
    start_metric = "Start" + start.capitalize()
    assert first_values[start_metric] == [1.0]
    assert ("ColdStart" in first_values) is cold_start
    assert "InitDuration" in first_values
    # the second invocation is warm: no INIT, an idle time, sequence 2
    assert second_values["StartWarm"] == [1.0]
    assert "ColdStart" not in second_values
    assert "InitDuration" not in second_values
    assert second_values["InvocationSeq"] == [2.0]
    assert second_values["IdleDuration"][0] >= 0.0
    assert {m for m in first_values if m.startswith("Start")} == {start_metric}


def test_errors_stale_connections_and_leaks_are_counted(capsys):
    fresh_environment(environ=FUNCTION_ENV)
    handler = probe(plain)
    events = [
        {"stale": ["failed", "detected", "detected", "risk"]},
        {"fail": True},
        {"leak": True},
    ]
    outcomes, (stale, failed, leaked) = run(handler, events, capsys)
    assert isinstance(outcomes[1], ValueError)
    assert metric_values(stale)["StaleConnectionFailed"] == [1.0]
    assert metric_values(stale)["StaleConnectionDetected"] == [2.0]
    assert metric_values(stale)["StaleConnectionRisk"] == [1.0]
    assert metric_values(failed)["Errors"] == [1.0]
    assert failed["lifecycle_outcome"] == "error"
    assert metric_values(leaked)["GlobalLeaks"] == [1.0]
    assert "StaleConnectionFailed" not in metric_values(leaked)


def test_every_metric_of_the_table_is_written_with_the_unit_it_documents(
    capsys, monkeypatch, tmp_path
):
    from lifecycle_probe.decorator import report_timeout
    from lifecycle_probe.rare_records import InitFailureRecord

    units: dict[str, set[str]] = {}

    def note(documents):
        for document in documents:
            for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                units.setdefault(metric["Name"], set()).add(metric["Unit"])

    for start in ("cold", "provisioned", "proactive"):
        fresh_environment(environ=FUNCTION_ENV, start=start)
        handler = probe(plain)
        events = [{}, {"stale": ["failed", "detected", "risk"]}, {"fail": True}, {"leak": True}]
        note(run(handler, events, capsys)[1])
    environment = fresh_environment(environ=FUNCTION_ENV, start="restored")
    environment.mark_restored()
    note(run(probe(plain), [{}], capsys)[1])
    # /tmp over its warning share, steady memory growth and a SnapStart hazard, in one
    # restored environment
    from lifecycle_probe import resources, snapstart

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE", "1")
    (tmp_path / "big.bin").write_bytes(b"x" * 900_000)
    rising = iter(range(100 << 20, 200 << 20, 1 << 20))
    monkeypatch.setattr(resources, "rss_bytes", lambda: next(rising))
    monkeypatch.setattr(snapstart, "_found", [("handler_module", "SALT", "random")])
    environment = fresh_environment(environ=FUNCTION_ENV, start="restored")
    environment.mark_restored()
    note(run(probe(plain), [{}] * 12, capsys)[1])
    monkeypatch.undo()

    # a timeout, as the internal extension reports it just before the deadline
    def hangs(event, context):
        report_timeout(time.time_ns() + 1_000_000_000)
        return {}

    fresh_environment(environ=FUNCTION_ENV)
    note(run(probe(hangs), [{}], capsys)[1])
    # a failed INIT
    sink = EmfSink(Config.resolve({}))
    sink.export_init_failure(
        InitFailureRecord(
            environment_id="e",
            init_type="on-demand",
            start_ns=0,
            end_ns=time.time_ns(),
            start_source="process",
            error_type="Runtime.ImportModuleError",
            function=current_environment().function,
        ),
        1.0,
    )
    note(emf_documents(capsys.readouterr().out))
    # records dropped by a queue nothing drained
    note(overflowed_documents(capsys))
    # Lambda's own figures (Telemetry API) reaching an export, its INIT figure far from
    # the probe's
    from lifecycle_probe import decorator
    from lifecycle_probe.rare_records import PlatformFigures

    figures = PlatformFigures(
        "r0",
        duration_ms=4.2,
        billed_duration_ms=5,
        max_memory_used_mb=90,
        init_duration_ms=9000.0,
        restore_duration_ms=120.5,
    )
    monkeypatch.setattr(decorator, "take_figures", lambda extension: (figures,))
    fresh_environment(environ=FUNCTION_ENV)
    (document,) = run(probe(plain), [{}], capsys)[1]
    monkeypatch.undo()
    note([document])
    values = metric_values(document)
    assert values["BilledDuration"] == [5.0]
    assert values["MaxMemoryUsed"] == [90.0]
    assert values["PlatformInitDuration"] == [9000.0]
    assert values["PlatformRestoreDuration"] == [120.5]
    assert values["InitDisagreements"] == [1.0]
    assert {name: {unit} for name, (unit, _) in METRICS.items()} == units


def test_a_timeout_is_counted_once_with_its_own_document(capsys):
    from lifecycle_probe.decorator import report_timeout

    def hangs(event, context):
        report_timeout(
            time.time_ns() + 1_000_000_000
        )  # what the extension does 100 ms before the deadline
        return {}

    fresh_environment(environ=FUNCTION_ENV)
    _, documents = run(probe(hangs), [{}], capsys)
    # the invocation finishing after all is not exported a second time
    (document,) = documents
    assert metric_values(document)["Timeouts"] == [1.0]
    assert document["lifecycle_outcome"] == "timeout"


def test_namespace_and_service_from_powertools_variables_and_options_win(capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Shop")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "orders-api")
    fresh_environment(environ=FUNCTION_ENV)
    _, (from_variables,) = run(probe(plain), [{}], capsys)
    assert namespace(from_variables) == "Shop"
    assert dimension_sets(from_variables) == [
        frozenset({("function_name", "orders"), ("service", "orders-api")})
    ]
    fresh_environment(environ=FUNCTION_ENV)
    handler = probe(namespace="Mine", service="probe", emf_high_resolution=True)(plain)
    _, (explicit,) = run(handler, [{}], capsys)
    assert namespace(explicit) == "Mine"
    assert ("service", "probe") in dimension_sets(explicit)[0]
    # high resolution: every metric stored at 1 s
    metrics = explicit["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    assert {m["StorageResolution"] for m in metrics} == {1}


def test_a_namespace_cloudwatch_would_refuse_gives_one_warning_and_the_default(
    capsys, monkeypatch, caplog
):
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "AWS/Lambda")
    fresh_environment(environ=FUNCTION_ENV)
    _, (document,) = run(probe(plain), [{}], capsys)
    assert namespace(document) == "LifecycleProbe"
    [warning] = [
        r.getMessage() for r in caplog.records if "POWERTOOLS_METRICS_NAMESPACE" in r.message
    ]
    assert "'AWS/Lambda'" in warning


def test_powertools_metrics_disabled_is_honoured(capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    fresh_environment(environ=FUNCTION_ENV)
    _, documents = run(probe(plain), [{}], capsys)
    assert documents == []


def test_no_event_value_reaches_the_emf_output(capsys):
    fresh_environment(environ=FUNCTION_ENV)
    secret = "hunter2-s3cr3t-payload"
    handler = probe(plain)
    capsys.readouterr()
    handler({"password": secret, "headers": {"Authorization": secret}}, FakeContext())
    assert secret not in capsys.readouterr().out


# -- ColdStart beside Powertools' own log_metrics(capture_cold_start_metric=True) ------------


@pytest.fixture
def powertools_metrics(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Shop")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "orders-api")
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics.provider.cold_start import reset_cold_start_flag

    reset_cold_start_flag()
    metrics = Metrics()
    metrics.clear_metrics()
    yield metrics
    metrics.clear_metrics()
    reset_cold_start_flag()


def stacked(metrics, order, probe_options=None):
    def business(event, context):
        metrics.add_metric(name="OrdersPlaced", unit="Count", value=1)
        if event.get("fail"):
            raise ValueError("asked to fail")
        return {"ok": True}

    probed = probe(**(probe_options or {}))
    log_metrics = metrics.log_metrics(capture_cold_start_metric=True)
    if order == "probe-outside":
        return probed(log_metrics(business))
    return log_metrics(probed(business))


def cold_starts(documents):
    """ColdStart count per (namespace, dimension set)."""
    counted: Counter[tuple[str, frozenset[tuple[str, str]]]] = Counter()
    for document in documents:
        values = metric_values(document)
        if "ColdStart" in values:
            for dimensions in dimension_sets(document):
                counted[(namespace(document), dimensions)] += int(sum(values["ColdStart"]))
    return counted


@pytest.mark.parametrize("order", ["probe-outside", "probe-inside"])
@pytest.mark.parametrize("first_fails", [False, True])
def test_coldstart_counted_once_in_any_stacking_order(
    capsys, powertools_metrics, order, first_fails
):
    fresh_environment(environ=FUNCTION_ENV)
    handler = stacked(powertools_metrics, order)
    _, documents = run(handler, [{"fail": first_fails}, {}, {}], capsys)
    # one ColdStart for the one cold start, on the metric both tools write
    key = (
        "Shop",
        frozenset({("function_name", "orders"), ("service", "orders-api")}),
    )
    assert cold_starts(documents) == {key: 1}
    # and nothing of either tool lost or doubled: three invocations, three business points
    invocations = sum(metric_values(d).get("Invocations", [0])[0] for d in documents)
    orders = sum(sum(metric_values(d).get("OrdersPlaced", [0])) for d in documents)
    assert (invocations, orders) == (3, 3)


def test_coldstart_in_another_namespace_is_counted_by_each_tool_in_its_own(
    capsys, powertools_metrics
):
    fresh_environment(environ=FUNCTION_ENV)
    handler = stacked(powertools_metrics, "probe-inside", {"namespace": "LifecycleProbe"})
    _, documents = run(handler, [{}, {}], capsys)
    assert sorted(cold_starts(documents).values()) == [1, 1]
    assert {ns for ns, _ in cold_starts(documents)} == {"Shop", "LifecycleProbe"}


# -- the specification checks can fail ------------------------------------------------------


def test_the_emf_checks_refuse_what_cloudwatch_would_drop():
    good: dict[str, Any] = {
        "_aws": {
            "Timestamp": 1_800_000_000_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "N",
                    "Dimensions": [["d"]],
                    "Metrics": [{"Name": "M", "Unit": "Count"}],
                }
            ],
        },
        "d": "x",
        "M": 1,
    }
    now_s = 1_800_000_000
    assert emf_problems(good, now_s) == []
    bad_unit = json.loads(json.dumps(good))
    bad_unit["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = "Requests"
    assert emf_problems(bad_unit, now_s) == ["M: unit 'Requests' is not one CloudWatch accepts"]
    too_many = json.loads(json.dumps(good))
    too_many["_aws"]["CloudWatchMetrics"][0]["Metrics"] = [
        {"Name": f"M{i}", "Unit": "Count"} for i in range(101)
    ]
    too_many.update({f"M{i}": 1 for i in range(101)})
    assert "101 metrics in one directive (at most 100)" in emf_problems(too_many, now_s)
    no_dimension_value = {**good, "d": ""}
    assert emf_problems(no_dimension_value, now_s) == [
        "dimension 'd' has no string value in the document"
    ]
    reserved = json.loads(json.dumps(good))
    reserved["_aws"]["CloudWatchMetrics"][0]["Namespace"] = "AWS/Lambda"
    assert emf_problems(reserved, now_s) == ["namespace 'AWS/Lambda' is reserved for AWS"]
    old = {**good, "_aws": {**good["_aws"], "Timestamp": 1_000}}
    assert emf_problems(old, now_s) == ["_aws.Timestamp 1000 is out of CloudWatch's window"]
    values = {**good, "M": [1] * 101}
    assert emf_problems(values, now_s) == ["M: 101 values (1 to 100)"]


def sink_after_the_response_and_a_record():
    """An emf sink whose internal extension is registered (it writes only when drained), and
    the record of one cold invocation to hand it."""
    from lifecycle_probe.sinks import add_process_sink, remove_process_sink
    from lifecycle_probe.testing import MemorySink

    fresh_environment(environ=FUNCTION_ENV)
    sink = EmfSink(Config.resolve({}))

    class Registered:
        registered = True

    sink.extension = Registered()  # type: ignore[assignment]
    memory = MemorySink()
    add_process_sink(memory)
    try:
        probe(exporter="none")(plain)({}, FakeContext())
    finally:
        remove_process_sink(memory)
    (record,) = memory.records
    return sink, record


def test_with_the_extension_registered_nothing_is_written_before_the_response(capsys):
    # GIVEN the emf sink of a probe whose internal extension is registered (on Lambda)
    sink, record = sink_after_the_response_and_a_record()
    capsys.readouterr()
    # WHEN the handler's record is exported (on the caller's path)
    sink.export(record)
    # THEN nothing is written yet: the caller does not wait for EMF
    assert capsys.readouterr().out == ""
    # and the extension's drain after the response writes the document
    sink.drain(1.0)
    (document,) = emf_documents(capsys.readouterr().out)
    assert metric_values(document)["Invocations"] == [1.0]


@pytest.fixture
def metrics_in_code(monkeypatch):
    """Powertools configured in code, not through its variables."""
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics.provider.cold_start import reset_cold_start_flag

    reset_cold_start_flag()
    metrics = Metrics(namespace="Orders", service="payment")
    metrics.clear_metrics()
    yield metrics
    metrics.clear_metrics()
    reset_cold_start_flag()


@pytest.mark.parametrize("order", ["probe-outside", "probe-inside"])
def test_powertools_configured_in_code_keeps_its_coldstart_beside_the_probes(
    capsys, monkeypatch, metrics_in_code, order
):
    # GIVEN Powertools' Metrics(namespace="Orders", service="payment") and a probe whose
    # namespace is Orders too (from the variable) but with no service: two metrics
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Orders")
    fresh_environment(environ=FUNCTION_ENV)
    handler = stacked(metrics_in_code, order)
    _, documents = run(handler, [{}, {}], capsys)
    # THEN each metric counts the one cold start once: Powertools' output unchanged
    assert cold_starts(documents) == {
        ("Orders", frozenset({("function_name", "orders"), ("service", "payment")})): 1,
        ("Orders", frozenset({("function_name", "orders")})): 1,
    }


@pytest.mark.parametrize("order", ["probe-outside", "probe-inside"])
def test_the_same_metric_configured_in_code_for_both_tools_is_counted_once(
    capsys, metrics_in_code, order
):
    fresh_environment(environ=FUNCTION_ENV)
    handler = stacked(metrics_in_code, order, {"namespace": "Orders", "service": "payment"})
    _, documents = run(handler, [{}, {}], capsys)
    key = ("Orders", frozenset({("function_name", "orders"), ("service", "payment")}))
    assert cold_starts(documents) == {key: 1}


def overflowed_documents(capsys, extra=2):
    """The documents of a sink whose extension never drained it past its queue's bound."""
    from lifecycle_probe.sinks.flush import MAX_BUFFERED

    sink, record = sink_after_the_response_and_a_record()
    capsys.readouterr()
    for _ in range(MAX_BUFFERED + extra):
        sink.export(record)
    sink.drain(1.0)
    return emf_documents(capsys.readouterr().out)


def test_records_a_full_queue_drops_are_counted_in_the_next_document(capsys, caplog):
    from lifecycle_probe.sinks.flush import MAX_BUFFERED

    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        documents = overflowed_documents(capsys, extra=3)
    assert len(documents) == MAX_BUFFERED
    dropped = [metric_values(d).get("TelemetryDropped") for d in documents]
    assert dropped[0] == [3.0]
    assert dropped[1:] == [None] * (MAX_BUFFERED - 1)
    (warning,) = [r.getMessage() for r in caplog.records if "queue is full" in r.getMessage()]
    assert "emf" in warning


def test_lambdas_reports_given_up_are_counted_in_telemetry_dropped_once(capsys):
    from lifecycle_probe.sinks.flush import MAX_BUFFERED

    sink, record = sink_after_the_response_and_a_record()
    capsys.readouterr()
    # GIVEN a record counting 2 of Lambda's reports given up before its export, then one
    # counting none
    sink.export(record.replace(platform_evicted=2))
    sink.export(record)
    sink.drain(1.0)
    documents = emf_documents(capsys.readouterr().out)
    # THEN its document counts them in TelemetryDropped, the next one does not
    assert [metric_values(d).get("TelemetryDropped") for d in documents] == [[2.0], None]
    # AND beside a record the full queue gave up, the document has one TelemetryDropped,
    # declared once, whose value is the sum
    sink.export(record)  # the oldest: given up when the queue overflows
    sink.export(record.replace(platform_evicted=2))
    for _ in range(MAX_BUFFERED - 1):
        sink.export(record)
    sink.drain(1.0)
    first = emf_documents(capsys.readouterr().out)[0]
    assert metric_values(first)["TelemetryDropped"] == [3.0]
    (directive,) = first["_aws"]["CloudWatchMetrics"]
    assert [m["Name"] for m in directive["Metrics"]].count("TelemetryDropped") == 1
    assert emf_problems(first) == []


def test_a_record_the_full_queue_gives_up_passes_on_lambdas_reports_it_counted(capsys):
    from lifecycle_probe.sinks.flush import MAX_BUFFERED

    sink, record = sink_after_the_response_and_a_record()
    capsys.readouterr()
    # GIVEN the oldest record waiting counts 5 of Lambda's reports given up
    sink.export(record.replace(platform_evicted=5))
    # WHEN the queue overflows and gives that record up
    for _ in range(MAX_BUFFERED):
        sink.export(record)
    sink.drain(1.0)
    documents = emf_documents(capsys.readouterr().out)
    # THEN the next document counts the record and the 5 reports: nothing lost uncounted
    assert len(documents) == MAX_BUFFERED
    assert metric_values(documents[0])["TelemetryDropped"] == [6.0]
    assert sum(sum(metric_values(d).get("TelemetryDropped", [0.0])) for d in documents) == 6.0


def test_garbage_in_powertools_metrics_disabled_gives_one_warning_and_emf_stays_on(
    capsys, monkeypatch, caplog
):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "garbage")
    fresh_environment(environ=FUNCTION_ENV)
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        _, documents = run(probe(plain), [{}, {}], capsys)
    assert len(documents) == 2
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "POWERTOOLS_METRICS_DISABLED='garbage'" in warning


RACE = """
import threading
from lifecycle_probe import probe
from lifecycle_probe.testing import FakeContext

handler = probe(exporter="emf", flush="sync")(lambda event, context: None)
start = threading.Barrier(8)

def call():
    start.wait()
    handler({}, FakeContext())

threads = [threading.Thread(target=call) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_first_writes_lose_no_document(attempt):
    # GIVEN a fresh process whose eight threads make their first call at once, Powertools
    # not imported yet (its import is serialised with the writes)
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_PROBE_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-c", RACE], capture_output=True, text=True, env=env, timeout=60
    )
    # THEN eight documents, and no warning that Powertools is missing
    assert done.returncode == 0, done.stderr
    documents = emf_documents(done.stdout)
    assert len(documents) == 8
    assert "aws-lambda-powertools" not in done.stderr


def test_a_timeout_document_starts_on_a_line_of_its_own(capsys):
    from lifecycle_probe.decorator import report_timeout

    def prints_then_hangs(event, context):
        print("half a line", end="")  # the handler is mid-line when the deadline comes
        report_timeout(time.time_ns() + 1_000_000_000)
        return {}

    fresh_environment(environ=FUNCTION_ENV)
    capsys.readouterr()
    probe(prints_then_hangs)({}, FakeContext())
    out = capsys.readouterr().out
    assert out.startswith("half a line\n")
    (document,) = emf_documents(out)
    assert metric_values(document)["Timeouts"] == [1.0]


SINK_IMPORTS_SCRIPT = """
import io, json, sys
from lifecycle_probe import probe


@probe(exporter=sys.argv[1], flush="sync")
def handler(event, context):
    if event.get("import"):
        import fractions  # the function's own import, during an invocation
    return 1


real_stdout, real_stderr = sys.stdout, sys.stderr
sys.stdout = sys.stderr = io.StringIO()
for event in ({}, {}, {"import": True}, {}):
    handler(event, None)
sys.stdout, sys.stderr = real_stdout, real_stderr
print(json.dumps([[i.module for i in record.imports] for record in seen]))
"""


@pytest.mark.parametrize("exporter", ["emf", "console"])
def test_what_a_sink_imports_on_the_callers_thread_is_not_the_functions_import(exporter):
    # GIVEN a fresh interpreter (nothing of Powertools or json imported yet) and a sink
    # flushing before the response, on the caller's thread
    from tests.fresh_process import CAPTURING_SINK, run_fresh

    imports = run_fresh(CAPTURING_SINK + SINK_IMPORTS_SCRIPT, exporter)
    # THEN the first writes' imports (Powertools, json, the ColdStart registry) are in no
    # record; the function's own import, in the third invocation, is
    assert imports[:2] == [[], []]
    assert "fractions" in imports[2]
    assert not [
        m for m in imports[2] if m.startswith(("aws_lambda_powertools", "lifecycle_probe", "json"))
    ]
    assert imports[3] == []
