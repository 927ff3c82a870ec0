"""Defects found by trying to break the probe (issue 11), each with the test that showed it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from typing import Any
from unittest import mock

import pytest

from lifecycle_probe import current, probe
from lifecycle_probe.config import Config
from lifecycle_probe.sinks import add_process_sink, build_sinks, remove_process_sink
from lifecycle_probe.sinks.console import ConsoleSink, read_lines
from lifecycle_probe.testing import FakeContext, capture_records, fresh_environment


class HostileEvent(dict):  # type: ignore[type-arg]
    """A mapping whose own methods raise, as a badly written event wrapper's might."""

    def get(self, *args, **kwargs):
        raise RuntimeError("no get for you")


def test_an_event_whose_methods_raise_costs_its_trigger_not_the_recording(caplog):
    # GIVEN a probed handler and an event whose .get raises
    fresh_environment()
    handler = probe(exporter="none")(lambda event, context: current().invocation_seq)
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"), capture_records() as got:
        # WHEN it is invoked with that event, then twice with plain ones
        results = [
            handler(HostileEvent(a=1), FakeContext()),
            handler({}, FakeContext()),
            handler({}, FakeContext()),
        ]
    # THEN every invocation is recorded in turn, none is taken as nested
    assert results == [1, 2, 3]
    assert [r.facts.invocation_seq for r in got.records] == [1, 2, 3]
    assert got.records[0].trigger == "other"
    # and nothing is left in flight afterwards
    assert current().start is None
    assert [r.getMessage() for r in caplog.records if "event reading" in r.getMessage()]


def test_one_failed_invocation_start_does_not_turn_recording_off(monkeypatch):
    fresh_environment()
    handler = probe(exporter="none")(lambda event, context: "ok")
    from lifecycle_probe.environment import Environment

    real = Environment.begin_invocation
    calls = {"n": 0}

    def fails_once(self, *args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("state corrupted")
        return real(self, *args)

    monkeypatch.setattr(Environment, "begin_invocation", fails_once)
    with capture_records() as got:
        assert [handler({}, FakeContext()) for _ in range(3)] == ["ok"] * 3
    assert [r.facts.invocation_seq for r in got.records] == [1, 2]


def test_a_child_forked_by_the_handler_exports_nothing_of_its_parents_invocation(tmp_path):
    # GIVEN a probed handler that forks; its child returns through the probe's wrapper
    fresh_environment()
    lines_path = tmp_path / "lines.jsonl"
    parent = os.getpid()

    def forks(event, context):
        child = os.fork()
        if child == 0:
            return "child"
        os.waitpid(child, 0)
        return "parent"

    handler = probe(exporter="none")(forks)
    with open(lines_path, "a") as stream:
        sink = ConsoleSink(stream)
        add_process_sink(sink)
        try:
            result = handler({}, FakeContext())
        finally:
            if os.getpid() != parent:
                os._exit(0)  # the child, back from the handler: gone without a trace
            remove_process_sink(sink)
    # THEN the parent's invocation is recorded once, with its INIT once
    assert result == "parent"
    lines = read_lines(lines_path.read_text())
    assert [line["lifecycle_probe"] for line in lines] == ["init", "invocation"]


def test_probing_in_a_loop_shares_sinks_no_thread_or_file_per_call(tmp_path):
    # GIVEN a batch job that wraps a handler anew for every item, exporting to a file
    fresh_environment()
    path = tmp_path / "otlp.jsonl"
    options: dict[str, Any] = {"exporter": "otlp-file", "otlp_file": str(path), "flush": "sync"}
    probe(**options)(lambda event, context: 0)({}, FakeContext())  # the SDK, loaded once

    def tasks_and_fds():
        return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))

    before = tasks_and_fds()
    # WHEN it does so 300 times
    for item in range(300):
        assert probe(**options)(lambda event, context: event)(item, FakeContext()) == item
    # THEN threads and open files do not grow with the calls
    after = tasks_and_fds()
    assert after[0] <= before[0] + 1
    assert after[1] <= before[1] + 1
    # one set of sinks for the one configuration
    assert build_sinks(Config.resolve(**options)) is build_sinks(Config.resolve(**options))


def test_a_magicmock_context_keeps_the_flush_budget_and_the_console_line(caplog):
    fresh_environment()
    stream = io.StringIO()
    sink = ConsoleSink(stream)
    add_process_sink(sink)
    try:
        with caplog.at_level(logging.WARNING, logger="lifecycle_probe"), capture_records() as got:
            assert probe(exporter="none")(lambda e, c: 5)({}, mock.MagicMock()) == 5
    finally:
        remove_process_sink(sink)
    (record,) = got.records
    # no 1 ms deadline made up from a mock, no request id or ARN that is a mock
    assert record.deadline_ns is None
    assert record.facts.request_id is None
    assert record.invoked_function_arn is None
    (line,) = [x for x in read_lines(stream.getvalue()) if x["lifecycle_probe"] == "invocation"]
    assert line["request_id"] is None
    assert caplog.records == []


def test_an_async_handler_is_recorded_for_as_long_as_its_coroutine_runs():
    fresh_environment()

    @probe(exporter="none")
    async def handler(event, context):
        await asyncio.sleep(0.05)
        if event.get("fail"):
            raise ValueError("asked to fail")
        return {"ok": True}

    with capture_records() as got:
        assert asyncio.run(handler({}, FakeContext())) == {"ok": True}
        with pytest.raises(ValueError, match="asked to fail"):
            asyncio.run(handler({"fail": True}, FakeContext()))
    assert [r.outcome for r in got.records] == ["ok", "error"]
    assert all(r.duration_s >= 0.05 for r in got.records)
    assert asyncio.iscoroutinefunction(handler)


@pytest.mark.parametrize(
    ("variable", "default"),
    [
        ("LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS", 2000),
        ("LIFECYCLE_PROBE_IMPORT_MIN_MS", 1.0),
        ("LIFECYCLE_PROBE_STALE_IDLE_S", 60.0),
        ("LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS", 1000),
    ],
)
@pytest.mark.parametrize("huge", ["1" + "0" * 30, "1e300", "9" * 5000])
def test_huge_numbers_are_refused_at_the_door_with_one_warning(
    monkeypatch, caplog, variable, default, huge
):
    fresh_environment()
    monkeypatch.setenv(variable, huge)
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        config = Config.resolve()
        Config.resolve()
    name = variable.removeprefix("LIFECYCLE_PROBE_").lower()
    assert getattr(config, name) == default
    (warning,) = [r.getMessage() for r in caplog.records]
    assert variable in warning
    assert "using the default" in warning


def test_a_huge_flush_timeout_still_exports(monkeypatch, tmp_path):
    # GIVEN LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS far past anything a lock's timeout takes
    fresh_environment()
    monkeypatch.setenv("LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS", "1" + "0" * 30)
    path = tmp_path / "otlp.jsonl"
    handler = probe(exporter="otlp-file", otlp_file=str(path), flush="sync")(lambda e, c: 1)
    # WHEN a handler runs (no deadline: outside Lambda)
    assert handler({}, None) == 1
    # THEN its spans are in the file: the default bound was used, nothing overflowed
    assert '"resourceSpans"' in path.read_text()


HOOKED_IMPORT = """
import json
import lifecycle_probe
lifecycle_probe.install(import_min_ms=0)
import urllib3  # tracked: its post-import hook loads the tracking code and wrapt
from lifecycle_probe.imports import active_tracer
print(json.dumps([r.module for r in active_tracer().take_init()]))
"""


def init_imports_of(code: str) -> list[str]:
    """The modules a fresh interpreter running ``code`` prints as its INIT imports (the
    import tracer's records, as JSON), with no LIFECYCLE_PROBE_* variable of ours."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_PROBE_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    modules: list[str] = json.loads(done.stdout)
    return modules


def test_what_a_post_import_hook_imports_is_not_the_functions_import():
    modules = init_imports_of(HOOKED_IMPORT)
    assert "urllib3" in modules
    assert [m for m in modules if m.startswith(("lifecycle_probe", "wrapt"))] == []


def test_a_hanging_collector_does_not_starve_the_otlp_file(tmp_path, monkeypatch):
    # GIVEN otlp (a collector that accepts and never answers) listed before otlp-file
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    path = tmp_path / "otlp.jsonl"
    fresh_environment()
    try:
        handler = probe(
            exporter="otlp,otlp-file", otlp_file=str(path), flush="sync", flush_timeout_ms=300
        )(lambda event, context: "ok")
        # WHEN an invocation's flush runs out its budget on the collector
        assert handler({}, FakeContext()) == "ok"
        # THEN the file already has the invocation's spans: it was written first
        assert '"resourceSpans"' in path.read_text()
    finally:
        listener.close()


SINKS_AT_INIT = """
import json
from lifecycle_probe import probe
from lifecycle_probe.imports import active_tracer
probe(exporter="emf,console", import_min_ms=0)(lambda event, context: None)
print(json.dumps([r.module for r in active_tracer().take_init()]))
"""


def test_the_sinks_modules_are_not_the_functions_imports():
    # GIVEN a function module whose @probe builds its sinks during INIT
    modules = init_imports_of(SINKS_AT_INIT)
    # THEN the INIT import tree names none of the probe's own sink modules
    assert [m for m in modules if m.startswith("lifecycle_probe")] == []
