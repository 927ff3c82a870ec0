"""The internal extension under faults: it never dies while Lambda counts on it, and it
never holds an invocation it cannot see the end of."""

from __future__ import annotations

import logging
import time
import types

import pytest

from lifecycle_probe import extension as extension_module
from lifecycle_probe import runtime_hooks
from lifecycle_probe._safe import forget_warnings
from lifecycle_probe.extension import InternalExtension, after_response_extension
from tests.functional.test_extension import FakeExtensionsApi, wait_until

EXIT_ERROR = ("POST", "/2020-01-01/extension/exit/error")
EVENT_NEXT = ("GET", "/2020-01-01/extension/event/next")
REGISTER = ("POST", "/2020-01-01/extension/register")


def is_registered(extension: InternalExtension) -> bool:
    # A call, not the property itself: the registration changes behind the type
    # checker's back (on the extension's thread).
    return extension.registered


@pytest.fixture
def api():
    made = FakeExtensionsApi()
    yield made
    made.close()


def invoke_event(request_id: str, in_s: float = 20.0, **fields: object) -> dict[str, object]:
    return {
        "eventType": "INVOKE",
        "requestId": request_id,
        "deadlineMs": (time.time() + in_s) * 1000,
        **fields,
    }


@pytest.fixture
def fresh_hooks(monkeypatch):
    """A process in which no runtime client is wrapped yet and no extension exists."""
    monkeypatch.setattr(extension_module, "_extension", None)
    monkeypatch.setattr(runtime_hooks, "_wrapped", False)
    monkeypatch.setattr(runtime_hooks, "_on_wrapped", [])
    monkeypatch.setattr(runtime_hooks, "_listeners", [])
    monkeypatch.setattr(runtime_hooks, "_event_requests", 0)
    forget_warnings()


def test_an_after_response_step_that_raises_makes_it_leave_and_the_sinks_flush_themselves(
    api, caplog
):
    # GIVEN a registered extension whose flush raises past the per-flush guard
    # (SystemExit from a sink: BaseException, not Exception)
    calls: list[float] = []

    def exploding_flush(timeout_s: float) -> None:
        calls.append(timeout_s)
        raise SystemExit(3)

    extension = InternalExtension(api.address, flush_timeout_s=1.0)
    extension.add_flush(exploding_flush)
    extension.start()
    assert extension.wait_registered(5)
    assert extension.registered
    # WHEN an invocation's response is out and its flush runs
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        api.events.put(invoke_event("r1"))
        assert wait_until(api.events.empty)
        extension.response_sent("r1")
        # THEN it tells Lambda it is gone (exit/error), as a failing event/next does
        assert wait_until(lambda: EXIT_ERROR in api.requests)
    # AND it no longer counts as registered: every sink flushes before each response
    assert not is_registered(extension)
    assert extension.left
    # one more try for what that invocation left queued, then nothing
    assert len(calls) == 2
    assert api.requests.count(EVENT_NEXT) == 1
    lines = [r.getMessage() for r in caplog.records if "after-response step" in r.getMessage()]
    assert len(lines) == 1  # one warning, one per place and type
    assert "SystemExit" in lines[0]


def test_a_deadline_beyond_any_bound_is_clamped_and_the_extension_carries_on(api):
    # GIVEN an event whose deadline no wait can take (1e300 ms: OverflowError in a
    # queue's timeout, which used to kill the thread while it stayed registered)
    flushed: list[float] = []
    extension = InternalExtension(api.address, flush_timeout_s=1.0)
    extension.add_flush(flushed.append)
    extension.start()
    assert extension.wait_registered(5)
    api.events.put(invoke_event("huge", deadlineMs=1e300))
    assert wait_until(api.events.empty)
    extension.response_sent("huge")
    # THEN it flushes after the response as usual, bounded by the flush timeout
    assert wait_until(lambda: len(flushed) == 1)
    assert 0 < flushed[0] <= 1.0
    # AND serves the next invocation too
    api.events.put(invoke_event("next"))
    assert wait_until(api.events.empty)
    extension.response_sent("next")
    assert wait_until(lambda: len(flushed) == 2)
    assert extension.registered
    assert EXIT_ERROR not in api.requests


def test_no_registration_while_no_runtime_client_is_wrapped(api, fresh_hooks, monkeypatch):
    # GIVEN the Runtime API but a runtime client the probe does not hook
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    # Registration runs on the extension's own thread, started synchronously: a thread
    # never started is proof that nothing registers, with no wait for one that might.
    threads: list[str] = []
    start_thread = vars(extension_module)["start_daemon_thread"]  # wherever it comes from

    def recording_start(target, name):
        threads.append(name)
        start_thread(target, name)

    monkeypatch.setattr(extension_module, "start_daemon_thread", recording_start)
    extension = after_response_extension(1.0, init_over=False)
    assert extension is not None
    # THEN nothing registered, nor began to: Lambda would hold every invocation for an
    # extension that never sees a response; the sinks flush before each response instead
    assert threads == []
    assert REGISTER not in api.requests
    assert not extension.registered

    # WHEN a known runtime client is imported later during INIT (and wrapped)
    class LambdaRuntimeClient:
        def wait_next_invocation(self):
            return types.SimpleNamespace(invoke_id="r1")

    client = types.ModuleType("fake_runtime_client")
    LambdaRuntimeClient.__module__ = client.__name__
    client.LambdaRuntimeClient = LambdaRuntimeClient  # type: ignore[attr-defined]
    assert runtime_hooks.wrap_runtime_client(client)
    # THEN the extension registers then, before the runtime's first request
    assert extension.wait_registered(5)
    assert is_registered(extension)
    assert api.requests.count(REGISTER) == 1
    assert threads == ["lifecycle-probe-extension"]  # the recording sees a start


def test_never_started_extension_says_so_once(api, fresh_hooks, monkeypatch, caplog):
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    extension = after_response_extension(1.0, init_over=False)
    assert extension is not None
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        for _ in range(3):  # each invocation's end asks
            assert not extension.registered
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "flushing before each response" in lines[0]


def test_an_extension_that_cannot_see_responses_goes_blind_and_holds_nothing(
    api, fresh_hooks, caplog
):
    # GIVEN a registered extension told to check the runtime, in a process where the
    # runtime's requests never went through the hook (a client that bypasses it)
    flushed: list[float] = []
    extension = InternalExtension(api.address, flush_timeout_s=1.0)
    extension.watch_runtime = True
    extension.started = True
    extension.add_flush(flushed.append)
    extension.start()
    assert extension.wait_registered(5)
    # WHEN the first invocation comes
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        api.events.put(invoke_event("r1", in_s=30))
        # THEN it asks for its next event at once, with no response seen: the invocation
        # is not held to its deadline
        assert wait_until(lambda: api.requests.count(EVENT_NEXT) == 2, timeout_s=5)
    assert extension.blind
    assert not extension.registered  # the sinks flush before each response
    assert flushed == []
    assert EXIT_ERROR not in api.requests  # Lambda's books stay right: no reset
    assert any("do not go through the probe's hook" in r.getMessage() for r in caplog.records)


def dripping_server(reply: bytes, every_s: float):
    """A server on 127.0.0.1 that reads a request, then drips ``reply`` a byte at a time."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in reply:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(every_s)

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"127.0.0.1:{listener.getsockname()[1]}"


def test_a_registration_reply_dripped_over_seconds_times_out_within_the_bound():
    # GIVEN an Extensions API that drips its reply a byte every 50 ms (about 5 s in all)
    from lifecycle_probe.extension import REGISTRATION_WAIT_S, http_request

    reply = b"HTTP/1.1 200 OK\r\nLambda-Extension-Identifier: id\r\nContent-Length: 2\r\n\r\n{}"
    listener, address = dripping_server(reply, 0.05)
    try:
        # WHEN the probe registers, bounded by the registration wait
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            http_request(address, "POST", "/2020-01-01/extension/register", timeout_s=1.0)
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    # THEN it gives up at the bound (INIT is not held past it), not at the last byte
    assert 0.9 <= elapsed < 1.0 + 0.5
    assert REGISTRATION_WAIT_S <= 1.0


def test_managed_instances_register_no_extension_and_log_nothing(
    api, fresh_hooks, monkeypatch, caplog
):
    # GIVEN a worker of Lambda Managed Instances, whose Extensions API refuses every
    # registration (HTTP 403), as README says
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances")
    # WHEN the sinks ask for the after-response extension during INIT
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        extension = after_response_extension(1.0, init_over=False)
    # THEN there is none (the sinks flush before each response), nothing was asked of
    # Lambda, and no warning says what is expected there
    assert extension is None
    assert REGISTER not in api.requests
    assert caplog.records == []
