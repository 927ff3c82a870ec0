"""The probe's threads never become ``threading``'s main thread nor keep a process alive.

Each case runs a fresh interpreter (``python -c``) that has not imported ``threading``
before the probe's first flush: the situation of a script or a batch job outside Lambda.
Before the fix, the sink's worker imported the OpenTelemetry SDK, and with it
``threading``, and was taken for the main thread: the interpreter waited for it for ever
at exit, asyncio found no event loop in the real main thread ("Dummy-1"), and a forked
child hung at exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.functional.test_extension import FakeExtensionsApi

# A fresh interpreter importing the probe and the SDK takes ~1 s on this 2-core machine
# when other tests run beside; a hang is what the bound catches.
EXIT_BOUND_S = 30.0

PRELUDE = """
import os
import sys
assert "threading" not in sys.modules, "the test needs an interpreter without threading"
from lifecycle_probe import probe

@probe(exporter="otlp-file", flush="sync")
def handler(event, context):
    return event
"""


def run_script(body: str, tmp_path, env: dict[str, str] | None = None):
    """Run PRELUDE + ``body`` in a fresh interpreter; (returncode, stdout, stderr, seconds)."""
    variables = {
        **os.environ,
        "LIFECYCLE_PROBE_OTLP_FILE": str(tmp_path / "otlp.jsonl"),
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
        **(env or {}),
    }
    for name in ("AWS_LAMBDA_RUNTIME_API", "_HANDLER", "LIFECYCLE_PROBE_DISABLED"):
        variables.pop(name, None)
    script = textwrap.dedent(PRELUDE) + textwrap.dedent(body)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=variables,
            capture_output=True,
            text=True,
            timeout=EXIT_BOUND_S,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script did not exit within {EXIT_BOUND_S} s: {exc.stdout!r}")
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def test_a_script_exits_after_an_otlp_flush(tmp_path):
    code, out, err, _ = run_script(
        """
        assert handler({"n": 1}, None) == {"n": 1}
        import threading
        print(threading.current_thread() is threading.main_thread())
        print(sorted(t.name for t in threading.enumerate() if t.daemon))
        """,
        tmp_path,
    )
    assert code == 0, err
    lines = out.splitlines()[-2:]  # after the probe's INIT report
    # THEN the real main thread is threading's main thread, and the sink's one thread is
    # a daemon of its own, never waited for at exit
    assert lines[0] == "True"
    assert lines[1] == "['lifecycle-probe-otel']"
    # and the export happened before the exit
    assert '"resourceSpans"' in (tmp_path / "otlp.jsonl").read_text()


def test_asyncio_finds_its_loop_in_the_next_invocation(tmp_path):
    code, out, err, _ = run_script(
        """
        handler({}, None)  # the first flush starts the sink's thread

        @probe(exporter="otlp-file", flush="sync")
        def async_work(event, context):
            import asyncio  # imported by the function after the first flush

            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                return asyncio.get_event_loop().run_until_complete(asyncio.sleep(0, "ok"))
            finally:
                loop.close()

        print(async_work({}, None))
        """,
        tmp_path,
    )
    assert code == 0, err
    assert "no current event loop" not in err
    assert out.splitlines()[-1] == "ok"


def test_a_forked_child_that_exits_lets_the_handler_return(tmp_path):
    code, out, err, _ = run_script(
        """
        handler({}, None)

        @probe(exporter="otlp-file", flush="sync")
        def forking(event, context):
            import threading

            threading.current_thread()  # as any logging call does
            pid = os.fork()
            if pid == 0:
                # The child leaves as a Python program does: through interpreter exit.
                sys.exit(0)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
                time.sleep(0.01)
            os.kill(pid, 9)
            return "child hung at exit"

        import time
        print("child:", forking({}, None), flush=True)
        os._exit(0)  # this case is about the child; the parent's exit has its own test
        """,
        tmp_path,
    )
    # THEN the child left cleanly and at once: before the fix, its interpreter took the
    # probe's thread for the main one and failed at exit in threading._shutdown (3.11;
    # later versions hang there)
    assert code == 0, err
    assert out.splitlines()[-1] == "child: 0"
    assert "threading" not in err, err


def test_the_extension_thread_never_keeps_a_script_alive(tmp_path):
    # GIVEN a script with AWS_LAMBDA_RUNTIME_API set (an emulator, a test harness) whose
    # extension registers, gets an invocation and flushes after its response: the flush
    # imports what the OpenTelemetry SDK imports (logging, and so threading)
    api = FakeExtensionsApi()
    deadline_ms = (time.time() + 60) * 1000
    api.events.put({"eventType": "INVOKE", "requestId": "r1", "deadlineMs": deadline_ms})
    try:
        code, out, err, _ = run_script(
            """
            import time
            from lifecycle_probe.extension import InternalExtension

            extension = InternalExtension(API, 1.0)
            extension.add_flush(lambda timeout_s: __import__("logging"))
            extension.start()
            assert extension.wait_registered(10)
            extension.response_sent("r1")
            deadline = time.monotonic() + 10
            while not extension.flushed and time.monotonic() < deadline:
                time.sleep(0.01)
            import threading
            print(extension.flushed, threading.current_thread() is threading.main_thread())
            """.replace("API", repr(api.address)),
            tmp_path,
        )
    finally:
        api.close()
    # THEN the script exits at once (the extension waits in event/next, for ever), its
    # main thread threading's own
    assert code == 0, err
    assert out.splitlines()[-1] == "1 True"
