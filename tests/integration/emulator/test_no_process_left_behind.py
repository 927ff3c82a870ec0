"""No runtime process outlives the local Lambda: not on close, not on failure, not on death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from lifecycle_probe.emulator import FunctionConfig, InvocationResult, LocalLambda
from tests.integration.emulator.emulator_support import alive, runtime_processes, subprocess_env

pytestmark = pytest.mark.integration


def wait_gone(pids, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_context_manager_kills_runtimes_when_the_body_raises(handlers_dir):
    pids: list[int | None] = []
    busy: list[InvocationResult] = []
    worker = None

    def failing_body():
        nonlocal worker
        function = FunctionConfig("emu_basic.handler", handlers_dir, timeout_s=60)
        with LocalLambda(function) as emulator:
            results = emulator.invoke_many([{"sleep": 0.1}] * 2, concurrency=2)
            pids.extend(r.pid for r in results)
            # Frozen environments and a busy one: every kind must die.
            worker = threading.Thread(target=lambda: busy.append(emulator.invoke({"sleep": 30})))
            worker.start()
            deadline = time.monotonic() + 5
            while not any(e.state == "invoking" for e in emulator.environments):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            raise RuntimeError("the body failed")

    with pytest.raises(RuntimeError, match="body failed"):
        failing_body()

    assert worker is not None
    worker.join(timeout=5)
    assert [r.outcome for r in busy] == ["error"]
    assert len(pids) == 2
    assert not any(alive(pid) for pid in [*pids, busy[0].pid])
    assert runtime_processes(parent=os.getpid()) == []


def test_fixture_kills_runtimes_when_a_test_fails(tmp_path, handlers_dir):
    pids_file = tmp_path / "pids.json"
    test_file = tmp_path / "test_failing.py"
    test_file.write_text(
        textwrap.dedent(f"""
        import json
        from pathlib import Path

        def test_body_raises(local_lambda):
            emulator = local_lambda("emu_basic.handler", {str(handlers_dir)!r})
            results = emulator.invoke_many([{{"sleep": 0.1}}] * 2, concurrency=2)
            Path({str(pids_file)!r}).write_text(json.dumps([r.pid for r in results]))
            raise RuntimeError("the test body failed")
    """)
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "lifecycle_probe.emulator.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-c",
            str(tmp_path / "pytest.ini"),
            "--rootdir",
            str(tmp_path),
            str(test_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        cwd=tmp_path,
        check=False,
    )

    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed" in run.stdout
    assert "the test body failed" in run.stdout
    pids = json.loads(pids_file.read_text())
    assert len(pids) == 2
    assert wait_gone(pids), f"runtimes survived the failed test: {pids}"


def test_runtimes_die_with_a_killed_emulator(tmp_path, handlers_dir):
    script = tmp_path / "emulator_dies.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, os, signal
        from lifecycle_probe.emulator import FunctionConfig, InvocationResult, LocalLambda

        emulator = LocalLambda(FunctionConfig("emu_basic.handler", {str(handlers_dir)!r}))
        emulator.start()
        results = emulator.invoke_many([{{"sleep": 0.1}}] * 2, concurrency=2)
        print(json.dumps([r.pid for r in results]), flush=True)
        # No close(), no atexit: only the kernel (PR_SET_PDEATHSIG) can clean up now.
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    )

    run = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        check=False,
    )

    assert run.returncode == -signal.SIGKILL, run.stderr
    pids = json.loads(run.stdout)
    assert len(pids) == 2
    assert wait_gone(pids), f"frozen runtimes survived their emulator: {pids}"


def test_interpreter_exit_without_close_kills_runtimes(tmp_path, handlers_dir):
    script = tmp_path / "emulator_exits.py"
    script.write_text(
        textwrap.dedent(f"""
        import json
        from lifecycle_probe.emulator import FunctionConfig, InvocationResult, LocalLambda

        emulator = LocalLambda(FunctionConfig("emu_basic.handler", {str(handlers_dir)!r}))
        emulator.start()
        result = emulator.invoke()
        print(json.dumps([result.pid]), flush=True)
        raise SystemExit(0)  # no close(): the atexit hook must do it
    """)
    )

    run = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        check=False,
    )

    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    pids = json.loads(run.stdout)
    assert wait_gone(pids, timeout_s=1.0)
