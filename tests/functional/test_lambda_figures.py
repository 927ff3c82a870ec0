"""Lambda's own figures: the extension's subscription, the option that turns it off, and
what an export makes of the figures that reached it (the in-runtime tests, with the local
Lambda's own figures, are in tests/integration/probe/test_lambda_figures_in_runtime.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lifecycle_probe import decorator, probe
from lifecycle_probe.config import Config
from lifecycle_probe.extension import InternalExtension
from lifecycle_probe.lambda_figures import INIT_AGREEMENT_MS
from lifecycle_probe.rare_records import PlatformFigures
from lifecycle_probe.testing import FakeContext, capture_records, fresh_environment

FUNCTION_ENV = {"AWS_LAMBDA_FUNCTION_NAME": "orders"}


class FakeLambdaApi:
    """Extensions API and Telemetry API: notes every request, in order; event/next waits."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.release = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _note(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                api.requests.append((self.command, self.path, dict(self.headers), body))

            def _reply(self, status, headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_POST(self):
                self._note()
                self._reply(200, {"Lambda-Extension-Identifier": "ext-1"})

            def do_PUT(self):
                self._note()
                self._reply(200)

            def do_GET(self):
                self._note()
                api.release.wait(30)  # the test is over: let the extension's thread go
                self._reply(500)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def first_event_request(self, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(method == "GET" for method, *_ in self.requests):
                return True
            time.sleep(0.01)
        return False

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lambda_api():
    api = FakeLambdaApi()
    yield api
    api.close()


def test_the_extension_subscribes_right_after_registering(lambda_api):
    # GIVEN the internal extension, started during INIT
    extension = InternalExtension(lambda_api.address, flush_timeout_s=1.0)
    extension.start()
    # WHEN it has registered and asked for its first event
    assert extension.wait_registered(5)
    assert lambda_api.first_event_request()
    # THEN it subscribed between the two: platform events only, the smallest buffer,
    # under its own extension id
    methods = [(method, path) for method, path, _, _ in lambda_api.requests]
    assert methods[:3] == [
        ("POST", "/2020-01-01/extension/register"),
        ("PUT", "/2022-07-01/telemetry"),
        ("GET", "/2020-01-01/extension/event/next"),
    ]
    _, _, headers, body = lambda_api.requests[1]
    assert headers["Lambda-Extension-Identifier"] == "ext-1"
    subscription = json.loads(body)
    assert subscription["types"] == ["platform"]
    assert subscription["buffering"] == {"maxItems": 1000, "maxBytes": 262_144, "timeoutMs": 25}
    assert extension.telemetry is not None
    extension.telemetry.close()


def test_the_option_off_means_no_subscription(lambda_api):
    extension = InternalExtension(lambda_api.address, flush_timeout_s=1.0, telemetry_api=False)
    extension.start()
    assert extension.wait_registered(5)
    assert lambda_api.first_event_request()
    assert [m for m, *_ in lambda_api.requests] == ["POST", "GET"]
    assert extension.telemetry is None
    assert extension.take_platform_figures() == ()
    assert extension.take_platform_evicted() == 0


@pytest.mark.parametrize(
    ("raw", "expected"), [("off", False), ("0", False), ("on", True), ("true", True)]
)
def test_the_option_is_read_from_its_variable(raw, expected):
    assert Config.resolve({"LIFECYCLE_PROBE_TELEMETRY_API": raw}).telemetry_api is expected
    assert Config.resolve({}).telemetry_api is True


def test_a_bad_value_of_the_option_names_it_and_keeps_the_default(caplog):
    fresh_environment()
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        config = Config.resolve({"LIFECYCLE_PROBE_TELEMETRY_API": "sometimes"})
    assert config.telemetry_api is True
    (message,) = [r.getMessage() for r in caplog.records]
    assert "LIFECYCLE_PROBE_TELEMETRY_API='sometimes' is not valid" in message
    assert message.endswith("using the default on")  # as README writes it, not True


def test_outside_lambda_nothing_subscribes_and_no_thread_starts(monkeypatch):
    # GIVEN no Runtime API (not on Lambda), a probe whose sinks would flush after the
    # response where an extension could register
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    fresh_environment(environ=FUNCTION_ENV)
    before = {thread.ident for thread in threading.enumerate()}
    handler = probe(lambda event, context: {"ok": True}, exporter="emf")
    # WHEN it is invoked
    with capture_records() as sink:
        assert handler({}, FakeContext(function_name="orders")) == {"ok": True}
    # THEN no thread of the probe's was started, and the record has no figures
    started = [t.name for t in threading.enumerate() if t.ident not in before]
    assert [name for name in started if name.startswith("lifecycle-probe")] == []
    (record,) = sink.records
    assert (record.platform, record.init_disagreements) == ((), ())


def figures(request_id, init_ms=None):
    return PlatformFigures(
        request_id,
        duration_ms=3.5,
        billed_duration_ms=4,
        max_memory_used_mb=77,
        init_duration_ms=init_ms,
    )


def returns_nothing(event, context):
    return {}


def probed_records(monkeypatch, given, evicted=0, **fresh):
    """The records of two invocations, the figures ``given`` reaching the second export
    (and ``evicted``, the count of reports given up before it)."""
    arriving = iter([(), given])
    monkeypatch.setattr(decorator, "take_figures", lambda extension: next(arriving))
    counts = iter([0, evicted])
    monkeypatch.setattr(decorator, "take_evicted", lambda extension: next(counts))
    fresh_environment(environ=FUNCTION_ENV, **fresh)
    handler = probe(returns_nothing, exporter="none")
    with capture_records() as sink:
        for request_id in ("r1", "r2"):
            handler({}, FakeContext(function_name="orders", aws_request_id=request_id))
    return sink.records


def test_figures_reach_the_next_export_and_an_init_within_tolerance_agrees(monkeypatch):
    # GIVEN an INIT of 250 ms as the probe saw it, and Lambda reporting 250 ms + 49 ms
    given = (figures("r1", init_ms=250.0 + INIT_AGREEMENT_MS - 1),)
    first, second = probed_records(monkeypatch, given, init_duration_s=0.25)
    # THEN the figures are attached to the export they reached, naming their request
    assert (first.platform, second.platform) == ((), given)
    assert second.init_disagreements == ()


def test_an_init_beyond_tolerance_is_a_disagreement_naming_both_figures(monkeypatch):
    given = (figures("r1", init_ms=250.0 + INIT_AGREEMENT_MS + 1), figures("r2"))
    _, second = probed_records(monkeypatch, given, init_duration_s=0.25)
    (disagreement,) = second.init_disagreements
    assert disagreement.request_id == "r1"
    assert disagreement.lambda_init_duration_ms == 301.0
    assert disagreement.probe_init_duration_ms == pytest.approx(250.0, abs=1e-3)


def test_an_estimated_init_is_not_compared(monkeypatch):
    # GIVEN an INIT whose end the probe had no signal of (estimated)
    given = (figures("r1", init_ms=5000.0),)
    _, second = probed_records(monkeypatch, given, exact=False)
    assert second.platform == given
    assert second.init_disagreements == ()


def test_only_the_first_requests_init_after_a_successful_init_is_compared(monkeypatch):
    # GIVEN a subscription that saw a successful INIT, then requests r1 (the first) and r2
    import types

    from lifecycle_probe import extension as extension_module
    from lifecycle_probe.telemetry_api import TelemetrySubscriber

    telemetry = TelemetrySubscriber()
    telemetry.receive(
        [
            {
                "type": "platform.initReport",
                "record": {"phase": "init", "status": "success", "metrics": {"durationMs": 1}},
            },
            {"type": "platform.start", "record": {"requestId": "r1"}},
            {"type": "platform.start", "record": {"requestId": "r2"}},
        ]
    )
    monkeypatch.setattr(extension_module, "_extension", types.SimpleNamespace(telemetry=telemetry))
    # WHEN INIT figures far from the probe's reach the export for both requests
    given = (figures("r2", init_ms=5000.0), figures("r1", init_ms=5000.0))
    _, second = probed_records(monkeypatch, given, init_duration_s=0.25)
    # THEN only the first request's is compared (r2's is no start the probe measured)
    assert second.platform == given
    assert [d.request_id for d in second.init_disagreements] == ["r1"]


@pytest.mark.parametrize(
    ("exporters", "subscribes"),
    [(("console",), False), (("console", "emf"), True), (("otlp-file",), True)],
)
def test_no_subscription_when_no_exporter_writes_the_figures(monkeypatch, exporters, subscribes):
    # GIVEN INIT on Lambda (a Runtime API), the console exporter alone or with another
    from lifecycle_probe import extension as extension_module

    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
    monkeypatch.setattr(extension_module, "_extension", None)
    monkeypatch.setattr(extension_module, "when_runtime_client_wrapped", lambda start: None)
    fresh_environment(environ=FUNCTION_ENV, exact=False)  # INIT not over yet
    # WHEN the sinks ask for the after-response extension
    extension = extension_module.extension_for_this_environment(1.0, True, exporters)
    # THEN it subscribes only if a configured exporter writes Lambda's figures
    assert extension is not None
    assert extension.telemetry_api is subscribes


def test_reports_given_up_are_counted_in_the_export_that_carries_the_figures(monkeypatch):
    # GIVEN the process's extension, whose subscriber keeps 2 reports, and 5 reports that
    # arrived before any export took them (the 3 oldest given up)
    from lifecycle_probe import extension as extension_module
    from lifecycle_probe.telemetry_api import TelemetrySubscriber
    from tests.unit.test_telemetry_api import report

    extension = InternalExtension("127.0.0.1:9", flush_timeout_s=1.0, telemetry_api=False)
    extension.telemetry = TelemetrySubscriber(limit=2)
    extension.telemetry.receive([report(f"r{n}") for n in range(5)])
    monkeypatch.setattr(extension_module, "_extension", extension)
    fresh_environment(environ=FUNCTION_ENV, exact=False)  # no INIT figure to compare
    handler = probe(returns_nothing, exporter="none")
    # WHEN two invocations are exported
    with capture_records() as sink:
        for request_id in ("r5", "r6"):
            handler({}, FakeContext(function_name="orders", aws_request_id=request_id))
    # THEN the first carries the 2 kept figures and the count of the 3 given up, the
    # second neither: each eviction reaches one export
    first, second = sink.records
    assert [f.request_id for f in first.platform] == ["r3", "r4"]
    assert (first.platform_evicted, second.platform_evicted) == (3, 0)
    assert second.platform == ()
    assert extension.telemetry.evicted == 3


def test_a_forked_child_takes_no_count_of_the_parents_reports(monkeypatch):
    from lifecycle_probe.telemetry_api import TelemetrySubscriber
    from tests.unit.test_telemetry_api import report

    extension = InternalExtension("127.0.0.1:9", flush_timeout_s=1.0, telemetry_api=False)
    extension.telemetry = TelemetrySubscriber(limit=1)
    extension.telemetry.receive([report("r1"), report("r2")])
    extension._pid = -1  # as a child of fork sees its parent's extension
    assert extension.take_platform_evicted() == 0
    assert extension.telemetry.take_evicted() == 1  # still the parent's to export
