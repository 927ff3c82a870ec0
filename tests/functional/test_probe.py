import inspect
import io
import json
import logging
import sys
import threading
import traceback

import pytest

import lifecycle_probe
from lifecycle_probe import current, probe
from lifecycle_probe.records import COLD, ERROR, OK, WARM
from lifecycle_probe.sinks import Sink
from lifecycle_probe.sinks.console import ConsoleSink
from lifecycle_probe.testing import FakeContext, capture_records, fresh_environment


def test_bare_decorator_passes_the_very_same_result_through():
    sentinel = object()

    @probe
    def handler(event, context):
        return sentinel

    with capture_records() as captured:
        assert handler({}, FakeContext()) is sentinel
    assert captured.starts == [COLD]
    assert handler.__name__ == "handler"
    assert inspect.unwrap(handler)(None, None) is sentinel


def test_decorator_with_options_and_records_for_cold_then_warm():
    @probe(exporter="none", proactive_init_gap_ms=60_000)
    def handler(event, context):
        return event["n"] * 2

    with capture_records() as captured:
        results = [handler({"n": n}, FakeContext(aws_request_id=f"req-{n}")) for n in range(3)]
    assert results == [0, 2, 4]
    assert captured.starts == [COLD, WARM, WARM]
    first, second, third = captured.records
    assert [r.facts.invocation_seq for r in captured.records] == [1, 2, 3]
    assert [r.facts.request_id for r in captured.records] == ["req-0", "req-1", "req-2"]
    assert first.init is not None
    assert second.init is None
    assert third.init is None
    assert first.facts.idle_s is None
    assert second.facts.idle_s is not None
    assert second.facts.idle_s >= 0
    # idle = the time between the previous end and this start
    assert second.facts.invoke_start_ns is not None
    assert second.facts.idle_s == pytest.approx(
        (second.facts.invoke_start_ns - first.end_ns) / 1e9, abs=1e-9
    )
    assert all(r.outcome == OK and r.error_type is None for r in captured.records)
    assert (
        first.invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    )


def test_raising_handler_propagates_the_same_exception_and_traceback_and_records_error():
    class Boom(Exception):
        pass

    raised = Boom("no")

    def original(event, context):
        raise raised

    handler = probe(exporter="none")(original)
    with capture_records() as captured, pytest.raises(Boom) as info:
        handler({}, FakeContext())
    assert info.value is raised
    frames = traceback.extract_tb(info.value.__traceback__)
    # the innermost frame is still the handler's own raise
    assert frames[-1].name == "original"
    assert frames[-1].line == "raise raised"
    assert [(r.outcome, r.error_type) for r in captured.records] == [
        (
            ERROR,
            "test_raising_handler_propagates_the_same_exception_and_traceback_and_records_error.<locals>.Boom",
        )
    ]
    # the environment goes on: the next invocation is warm
    with capture_records() as later, pytest.raises(Boom):
        handler({}, FakeContext())
    assert later.starts == [WARM]


@pytest.mark.parametrize("context", [None, object(), FakeContext()])
def test_works_with_none_or_incomplete_context(context):
    @probe(exporter="none")
    def handler(event, context):
        return current()

    with capture_records() as captured:
        facts = handler({}, context)
    assert facts.start == COLD
    assert captured.records[0].facts.request_id == (
        None if not isinstance(context, FakeContext) else context.aws_request_id
    )
    assert captured.records[0].invoked_function_arn == getattr(
        context, "invoked_function_arn", None
    )


def test_current_inside_and_outside_the_handler():
    seen = []

    @probe(exporter="none")
    def handler(event, context):
        seen.append(current())
        return

    outside_before = current()
    handler({}, FakeContext(aws_request_id="r1"))
    handler({}, FakeContext(aws_request_id="r2"))
    outside_after = current()
    assert [(f.start, f.invocation_seq, f.request_id) for f in seen] == [
        (COLD, 1, "r1"),
        (WARM, 2, "r2"),
    ]
    assert seen[0].idle_s is None
    assert seen[1].idle_s is not None
    assert seen[0].init_duration_s is not None
    assert seen[0].init_type == "on-demand"
    assert (outside_before.start, outside_before.invocation_seq) == (None, 0)
    assert (outside_after.start, outside_after.invocation_seq) == (None, 2)
    assert outside_after.environment_id == seen[0].environment_id
    with pytest.raises(AttributeError):
        seen[0].start = "warm"  # type: ignore[misc]  # the type checker refuses it too


def test_disabled_probe_is_the_handler_itself(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_PROBE_DISABLED", "1")

    def handler(event, context):
        return 1

    assert probe(handler) is handler
    assert probe(exporter="console")(handler) is handler
    with capture_records() as captured:
        assert probe(handler)({}, None) == 1
    assert captured.records == []


def test_explicit_argument_beats_disabled_variable(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_PROBE_DISABLED", "1")

    def handler(event, context):
        return 1

    assert probe(disabled=False, exporter="none")(handler) is not handler


class ExplodingSink(Sink):
    name = "exploding"

    def __init__(self):
        self.calls = 0

    def export(self, record):
        self.calls += 1
        raise RuntimeError("collector on fire")


def test_raising_sink_warns_once_and_never_touches_the_result(caplog):
    exploding = ExplodingSink()

    @probe(exporter="none")
    def handler(event, context):
        return "fine"

    from lifecycle_probe.sinks import add_process_sink, remove_process_sink

    add_process_sink(exploding)
    try:
        with caplog.at_level(logging.WARNING, logger="lifecycle_probe"), capture_records() as after:
            results = [handler({}, FakeContext()) for _ in range(5)]
    finally:
        remove_process_sink(exploding)
    assert results == ["fine"] * 5
    assert exploding.calls == 5
    # the sink after the broken one still got every record
    assert len(after.records) == 5
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "exploding sink failed" in warnings[0]
    assert "collector on fire" in warnings[0]


def test_broken_capture_falls_back_to_calling_the_handler(monkeypatch, caplog):
    @probe(exporter="none")
    def handler(event, context):
        return event

    def broken(*args):
        raise ValueError("state corrupted")

    monkeypatch.setattr("lifecycle_probe.environment.Environment.begin_invocation", broken)
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        assert handler("event", None) == "event"
        assert handler("again", None) == "again"
    assert len(caplog.records) == 1
    assert "invocation start failed" in caplog.records[0].getMessage()


def test_emf_without_powertools_warns_once_says_what_to_install_and_leaves_the_handler(
    caplog, capsys, monkeypatch
):
    # GIVEN a trimmed layer without Powertools (every module of it fails to import)
    for name in list(sys.modules):
        if name == "aws_lambda_powertools" or name.startswith("aws_lambda_powertools."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "aws_lambda_powertools", None)
    result = object()
    # WHEN a handler probed with the emf exporter runs twice
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        handler = probe(exporter="emf")(lambda event, context: result)
        assert handler({}, None) is result
        assert handler({}, None) is result
    # THEN one warning names the package to install, and no EMF was written
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "pip install aws-lambda-powertools" in messages[0]
    assert '"_aws"' not in capsys.readouterr().out


def test_console_sink_writes_one_json_line_per_record_and_no_event_payload():
    stream = io.StringIO()

    def handler(event, context):
        return {"ok": True}

    wrapped = probe(exporter="none")(handler)
    from lifecycle_probe.sinks import add_process_sink, remove_process_sink

    sink = ConsoleSink(stream)
    add_process_sink(sink)
    try:
        secret_event = {"password": "hunter2", "headers": {"Authorization": "Bearer abc"}}
        wrapped(secret_event, FakeContext(aws_request_id="req-a"))
        wrapped(secret_event, FakeContext(aws_request_id="req-b"))
    finally:
        remove_process_sink(sink)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["lifecycle_probe"] for line in lines] == ["init", "invocation", "invocation"]
    init, first, second = lines
    assert (init["end_source"], init["estimated"]) == ("runtime", False)
    assert (first["start"], first["coldstart"], first["request_id"]) == (COLD, True, "req-a")
    assert (second["start"], second["invocation_seq"], second["outcome"]) == (WARM, 2, OK)
    assert "hunter2" not in stream.getvalue()
    assert "Bearer" not in stream.getvalue()


def test_console_sink_writes_the_restore_lambdas_figures_and_init_disagreements():
    from lifecycle_probe.rare_records import InitDisagreement, PlatformFigures, RestoreRecord

    # GIVEN the record of a first invocation after a SnapStart restore, which Lambda's
    # figures of two earlier requests reached, one of them an INIT far from the probe's
    with capture_records() as captured:
        probe(exporter="none")(lambda event, context: None)({}, FakeContext(aws_request_id="r2"))
    (record,) = captured.records
    environment_id = record.facts.environment_id
    record = record.replace(
        restore=RestoreRecord(
            environment_id=environment_id,
            start_ns=1_000_000_000,
            end_ns=1_250_000_000,
            end_source="runtime",
            pid=7,
        ),
        platform=(
            PlatformFigures(request_id="r0", billed_duration_ms=4, init_duration_ms=301.0),
            PlatformFigures(request_id="r1", duration_ms=3.5, max_memory_used_mb=77),
        ),
        init_disagreements=(
            InitDisagreement(
                request_id="r0", lambda_init_duration_ms=301.0, probe_init_duration_ms=250.0
            ),
        ),
    )
    # WHEN the console sink writes it
    stream = io.StringIO()
    ConsoleSink(stream).export(record)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    # THEN the restore follows the INIT, and each of Lambda's figures and the disagreement
    # follow the invocation, one line each, naming the request they are of, with only the
    # figures Lambda gave
    assert [line["lifecycle_probe"] for line in lines] == [
        "init",
        "restore",
        "invocation",
        "platform",
        "platform",
        "init_disagreement",
    ]
    _, restore, invocation, first, second, disagreement = lines
    assert invocation["request_id"] == "r2"
    assert restore == {
        "lifecycle_probe": "restore",
        "environment_id": environment_id,
        "start_ns": 1_000_000_000,
        "end_ns": 1_250_000_000,
        "duration_s": 0.25,
        "end_source": "runtime",
        "pid": 7,
    }
    assert first == {
        "lifecycle_probe": "platform",
        "environment_id": environment_id,
        "request_id": "r0",
        "billed_duration_ms": 4,
        "init_duration_ms": 301.0,
    }
    assert second == {
        "lifecycle_probe": "platform",
        "environment_id": environment_id,
        "request_id": "r1",
        "duration_ms": 3.5,
        "max_memory_used_mb": 77,
    }
    assert disagreement == {
        "lifecycle_probe": "init_disagreement",
        "environment_id": environment_id,
        "request_id": "r0",
        "lambda_init_duration_ms": 301.0,
        "probe_init_duration_ms": 250.0,
    }


def test_concurrent_invocations_in_threads_get_distinct_sequence_numbers():
    @probe(exporter="none")
    def handler(event, context):
        return current().invocation_seq

    results = []
    lock = threading.Lock()
    together = threading.Barrier(4)

    def worker():
        together.wait(timeout=60)  # all four calling at once, none done before the next starts
        for _ in range(200):
            value = handler({}, None)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    # A thread switch every microsecond: at the default 5 ms each worker would run its 200
    # calls in one time slice, one after the other, and no race could show.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert sorted(results) == list(range(1, 801))
    # and every one of them ended: none is left running
    from lifecycle_probe.environment import current_environment

    assert current_environment().running == {}


def test_fresh_environment_helper_simulates_a_new_environment():
    @probe(exporter="none")
    def handler(event, context):
        return current()

    first_env = handler({}, None).environment_id
    assert handler({}, None).start == WARM
    fresh_environment(start="provisioned")
    facts = handler({}, None)
    assert facts.start == "provisioned"
    assert facts.environment_id != first_env
    fresh_environment(start="proactive")
    assert handler({}, None).start == "proactive"


def test_public_names_and_version():
    assert lifecycle_probe.__all__ == [
        "LifecycleFacts",
        "__version__",
        "current",
        "install",
        "probe",
    ]
    assert lifecycle_probe.__version__ == "0.1.0"
    with pytest.raises(AttributeError):
        lifecycle_probe.nothing_here  # noqa: B018


def test_console_lines_can_be_read_back_out_of_a_mixed_log():
    from lifecycle_probe.sinks.console import read_lines

    stream = io.StringIO()
    stream.write("START RequestId: x\nsome user print\n")
    sink = ConsoleSink(stream)
    from lifecycle_probe.sinks import add_process_sink, remove_process_sink

    add_process_sink(sink)
    try:
        probe(exporter="none")(lambda e, c: None)({}, FakeContext(aws_request_id="r9"))
    finally:
        remove_process_sink(sink)
    stream.write('{"lifecycle_probe": broken json\nEND\n')
    lines = read_lines(stream.getvalue())
    assert [(line["lifecycle_probe"], line.get("request_id")) for line in lines] == [
        ("init", None),
        ("invocation", "r9"),
    ]


def test_a_probed_handler_is_never_probed_twice():
    @probe(exporter="none")
    def handler(event, context):
        return current()

    assert probe(handler) is handler
    assert probe(exporter="console")(handler) is handler
    with capture_records() as captured:
        facts = handler({}, None)
    assert (facts.start, facts.invocation_seq) == (COLD, 1)
    assert len(captured.records) == 1


def test_nested_probed_handlers_make_one_record():
    @probe(exporter="none")
    def inner(event, context):
        return current().invocation_seq

    @probe(exporter="none")
    def outer(event, context):
        return inner(event, context)

    with capture_records() as captured:
        assert outer({}, None) == 1
        assert outer({}, None) == 2
    assert captured.starts == [COLD, WARM]


def test_failing_capture_leaves_no_trace_in_the_handlers_exception(monkeypatch):
    def broken(*args):
        raise ValueError("state corrupted")

    monkeypatch.setattr("lifecycle_probe.environment.Environment.begin_invocation", broken)
    raised = KeyError("user error")

    @probe(exporter="none")
    def handler(event, context):
        raise raised

    with pytest.raises(KeyError) as info:
        handler({}, None)
    assert info.value is raised
    assert info.value.__context__ is None


def test_current_from_a_thread_the_handler_started():
    @probe(exporter="none")
    def handler(event, context):
        seen = []
        worker = threading.Thread(target=lambda: seen.append(current()))
        worker.start()
        worker.join()
        return seen[0]

    facts = handler({}, FakeContext(aws_request_id="threaded"))
    assert (facts.start, facts.request_id, facts.invocation_seq) == (COLD, "threaded", 1)
    assert current().start is None  # and nothing lingers after the invocation


def test_install_options_are_the_defaults_of_later_probes(caplog, capsys):
    # GIVEN install() told to export to the console (and given one bad option)
    assert lifecycle_probe.install(exporter="console", import_min_ms=10**400) is True
    assert any("argument import_min_ms" in r.getMessage() for r in caplog.records)
    # WHEN a bare @probe and one with its own exporter run
    probe(lambda e, c: 1)({}, FakeContext(aws_request_id="bare"))
    probe(exporter="none")(lambda e, c: 2)({}, FakeContext(aws_request_id="explicit"))
    # THEN the bare one used install()'s exporter, the explicit one its own
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    invocations = [line["request_id"] for line in lines if line["lifecycle_probe"] == "invocation"]
    assert invocations == ["bare"]


def test_disabled_by_install_disables_later_probes():
    assert lifecycle_probe.install(disabled=True) is False

    def handler(event, context):
        return 1

    assert probe(handler) is handler


def test_events_noted_during_an_invocation_ride_on_its_record():
    from lifecycle_probe.environment import current_environment
    from lifecycle_probe.records import LifecycleEvent

    @probe(exporter="none")
    def handler(event, context):
        current_environment().add_event(
            LifecycleEvent("lifecycle.connection.stale", 123, (("db.system", "postgresql"),))
        )
        return

    with capture_records() as captured:
        handler({}, None)
        probe(exporter="none")(lambda e, c: None)({}, None)
    first, second = captured.records
    assert [(e.name, e.attributes) for e in first.events] == [
        ("lifecycle.connection.stale", (("db.system", "postgresql"),))
    ]
    assert second.events == ()


def test_current_is_a_frozen_object_with_named_fields_not_a_tuple():
    @probe(exporter="none")
    def handler(event, context):
        return current()

    facts = handler({}, FakeContext(aws_request_id="r-facts"))
    assert isinstance(facts, lifecycle_probe.LifecycleFacts)
    assert not isinstance(facts, tuple)
    assert facts.request_id == "r-facts"
    assert facts.as_dict()["request_id"] == "r-facts"
    # coldstart (a property, README lists it among the facts) included, after start
    assert list(facts.as_dict())[:2] == ["start", "coldstart"]
    assert facts.as_dict()["coldstart"] is facts.coldstart is (facts.start == "cold")
    assert f"coldstart={facts.coldstart!r}" in repr(facts)
    assert facts.as_dict().keys() == {
        "start",
        "coldstart",
        "invocation_seq",
        "environment_id",
        "init_type",
        "init_duration_s",
        "init_estimated",
        "idle_s",
        "environment_age_s",
        "request_id",
        "invoke_start_ns",
    }
    with pytest.raises(TypeError):
        len(facts)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        facts[0]  # type: ignore[index]
    with pytest.raises(TypeError):
        iter(facts)  # type: ignore[call-overload]
    with pytest.raises(AttributeError):
        facts.request_id = "another"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del facts.start
    with pytest.raises(AttributeError):
        facts.extra = 1
    # equal to the same facts, never to the tuple of its values
    assert facts == facts.replace()
    assert hash(facts) == hash(facts.replace())
    assert facts != tuple(facts.as_dict().values())
    assert facts != facts.replace(request_id="another")


def test_the_facts_of_an_invocation_are_worked_out_once_and_only_when_asked(monkeypatch):
    from lifecycle_probe.environment import Environment

    built = []
    real = Environment.facts_of

    def counted(self, invocation):
        built.append(invocation.seq)
        return real(self, invocation)

    monkeypatch.setattr(Environment, "facts_of", counted)

    @probe(exporter="none")
    def quiet(event, context):
        return None

    @probe(exporter="none")
    def asks_twice(event, context):
        return current(), current()

    fresh_environment()
    quiet({}, FakeContext())
    assert built == []  # nobody asked: nothing was built
    first, again = asks_twice({}, FakeContext())
    assert first is again
    assert built == [2]


# -- methods ------------------------------------------------------------------------------------
class App:
    """Handlers as methods of every kind, each answering who it was called on."""

    def __init__(self, name="app"):
        self.name = name

    @probe(exporter="none")
    def method(self, event, context):
        return (self.name, event["n"], context.aws_request_id, current().invocation_seq)

    @probe(exporter="none")
    @staticmethod
    def static_below(event, context):
        return ("static", event["n"], current().invocation_seq)

    @staticmethod
    @probe(exporter="none")
    def static_above(event, context):
        return ("static", event["n"], current().invocation_seq)

    @probe(exporter="none")
    @classmethod
    def class_below(cls, event, context):
        return (cls.__name__, event["n"], current().invocation_seq)

    @classmethod
    @probe(exporter="none")
    def class_above(cls, event, context):
        return (cls.__name__, event["n"], current().invocation_seq)

    @probe(exporter="none")
    async def method_async(self, event, context):
        return (self.name, event["n"], current().invocation_seq)


def test_a_probed_method_is_called_on_its_instance_and_recorded():
    # GIVEN a method probed in its class body
    app = App("mine")
    # WHEN it is called on an instance, positionally then by keyword
    with capture_records() as captured:
        first = app.method({"n": 1}, FakeContext(aws_request_id="req-1"))
        second = app.method(event={"n": 2}, context=FakeContext(aws_request_id="req-2"))
    # THEN the method saw its own instance, and each call was one invocation
    assert first == ("mine", 1, "req-1", 1)
    assert second == ("mine", 2, "req-2", 2)
    assert captured.starts == [COLD, WARM]
    assert [r.facts.request_id for r in captured.records] == ["req-1", "req-2"]
    assert [r.outcome for r in captured.records] == [OK, OK]


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("static_below", "static"),
        ("static_above", "static"),
        ("class_below", "App"),
        ("class_above", "App"),
    ],
)
def test_static_and_class_methods_are_probed_in_either_order(name, owner):
    # GIVEN @probe stacked above or below @staticmethod / @classmethod
    # WHEN the method is called on the class and on an instance
    with capture_records() as captured:
        on_class = getattr(App, name)({"n": 1}, FakeContext(aws_request_id="req-1"))
        on_instance = getattr(App(), name)({"n": 2}, FakeContext(aws_request_id="req-2"))
    # THEN it ran as the kind of method it was declared, once per call, recorded
    assert (on_class, on_instance) == ((owner, 1, 1), (owner, 2, 2))
    assert captured.starts == [COLD, WARM]


def test_a_probed_async_method_is_recorded_when_its_coroutine_ends():
    import asyncio

    with capture_records() as captured:
        result = asyncio.run(App("mine").method_async({"n": 3}, FakeContext()))
    assert result == ("mine", 3, 1)
    assert captured.starts == [COLD]


def test_a_probed_method_raising_records_the_error_and_passes_it_through():
    class Failing:
        @probe(exporter="none")
        def handle(self, event, context):
            raise KeyError(event["n"])

    with capture_records() as captured, pytest.raises(KeyError) as caught:
        Failing().handle({"n": 7}, FakeContext())
    assert caught.value.args == (7,)
    assert [(r.outcome, r.error_type) for r in captured.records] == [(ERROR, "KeyError")]


def test_a_probed_bound_method_and_keyword_calls_of_a_function_work():
    # GIVEN a bound method probed from outside its class, and a plain function
    class Plain:
        def handle(self, event, context):
            return ("bound", event["n"], context.aws_request_id, current().invocation_seq)

    bound = probe(exporter="none")(Plain().handle)

    @probe(exporter="none")
    def handler(event, context):
        return (event, context.aws_request_id)

    # WHEN each is called, the function by keyword
    with capture_records() as captured:
        via_bound = bound({"n": 4}, FakeContext(aws_request_id="req-1"))
        via_keywords = handler(event=5, context=FakeContext(aws_request_id="req-2"))
    # THEN both ran as their originals would, each recorded
    assert via_bound == ("bound", 4, "req-1", 1)
    assert via_keywords == (5, "req-2")
    assert [r.facts.request_id for r in captured.records] == ["req-1", "req-2"]
