"""The internal extension against a small fake Extensions API on 127.0.0.1."""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lifecycle_probe.extension import InternalExtension


class FakeExtensionsApi:
    """Answers register with ``register_status``; hands out queued events on event/next."""

    def __init__(self, register_status=200, next_status=200):
        self.register_status = register_status
        self.next_status = next_status
        self.events: queue.Queue[dict[str, object]] = queue.Queue()
        self.requests: list[tuple[str, str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"{}", headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                api.requests.append(("POST", self.path))
                if self.path.endswith("/register"):
                    headers = {"Lambda-Extension-Identifier": "ext-1"}
                    self.reply(
                        api.register_status, b"{}", headers if api.register_status == 200 else None
                    )
                else:
                    self.reply(202)

            def do_GET(self):
                api.requests.append(("GET", self.path))
                if api.next_status != 200:
                    self.reply(api.next_status, b'{"errorType": "Extension.Unknown"}')
                    return
                event = api.events.get(timeout=30)
                self.reply(200, json.dumps(event).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.events.put({"eventType": "INVOKE", "requestId": "closing", "deadlineMs": 0})
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_factory():
    made = []

    def make(**options):
        api = FakeExtensionsApi(**options)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


def wait_until(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_flushes_only_after_the_matching_response(api_factory):
    api = api_factory()
    flushed = []
    extension = InternalExtension(api.address, flush_timeout_s=1.0)
    extension.add_flush(lambda timeout_s: flushed.append(timeout_s))
    extension.start()
    assert extension.wait_registered(5)
    assert extension.registered
    deadline_ms = (time.time() + 20) * 1000
    api.events.put({"eventType": "INVOKE", "requestId": "r1", "deadlineMs": deadline_ms})
    # WHEN responses to two other (older) requests come first
    extension.response_sent("r0")
    extension.response_sent("r00")
    # THEN the extension takes both and goes on waiting. It takes responses in order, and
    # only while it waits for the one of its invocation: had "r0" ended that wait, it would
    # have flushed and asked for its next event (which never comes here), leaving "r00" in
    # the queue. An empty queue is the proof, with no guess at how long a thread takes.
    assert wait_until(lambda: not extension._responses)
    assert flushed == []
    # AND the matching response ends it: one flush, bounded by the flush timeout
    extension.response_sent("r1")
    assert wait_until(lambda: len(flushed) == 1)
    assert 0 < flushed[0] <= 1.0  # bounded by the flush timeout


def test_refused_registration_leaves_the_sinks_to_flush_themselves(api_factory):
    api = api_factory(register_status=403)
    extension = InternalExtension(api.address, flush_timeout_s=1.0)
    extension.start()
    assert extension.wait_registered(5)
    assert not extension.registered
    extension.response_sent("r1")  # ignored: nobody would take it
    assert not extension._responses


def test_failing_event_next_leaves_lambda_with_exit_error(api_factory):
    api = api_factory(next_status=500)
    extension = InternalExtension(api.address, flush_timeout_s=1.0)
    extension.start()
    assert extension.wait_registered(5)
    # THEN after three failures it tells Lambda it is gone, and stops counting as registered
    assert wait_until(lambda: ("POST", "/2020-01-01/extension/exit/error") in api.requests)
    assert not extension.registered
    assert api.requests.count(("GET", "/2020-01-01/extension/event/next")) == 3


def test_an_invocation_running_into_its_deadline_is_reported_as_a_timeout(api_factory):
    api = api_factory()
    reports: list[int] = []
    flushes: list[float] = []
    extension = InternalExtension(api.address, flush_timeout_s=1.0)
    extension.add_timeout_report(reports.append)
    extension.add_flush(flushes.append)
    extension.start()
    assert extension.wait_registered(5)
    deadline_ms = int((time.time() + 0.5) * 1000)
    api.events.put({"eventType": "INVOKE", "requestId": "slow", "deadlineMs": deadline_ms})
    # WHEN no response comes: the report is made about 100 ms before the deadline
    assert wait_until(lambda: reports, timeout_s=5)
    assert reports == [deadline_ms * 1_000_000]
    assert time.time() * 1000 < deadline_ms + 50
    assert wait_until(lambda: flushes)
