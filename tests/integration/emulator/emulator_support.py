"""Helpers for the local Lambda's tests: finding runtime processes in /proc."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from lifecycle_probe.emulator import InvocationResult, LocalLambda


def runtime_processes(parent: int | None = None) -> list[int]:
    """Live (not zombie) awslambdaric processes, optionally only children of ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if b"awslambdaric" not in argv or fields[0] == b"Z":
            continue
        if parent is None or int(fields[1]) == parent:
            found.append(int(entry))
    return found


def alive(pid: int | None) -> bool:
    """True if ``pid`` is still a live awslambdaric process."""
    return pid is not None and pid in runtime_processes()


def in_flight_together(
    emulator: LocalLambda, count: int, gate: Path, timeout_s: float = 10.0, **event: Any
) -> list[InvocationResult]:
    """Serve ``count`` requests that are certainly all in flight at the same time.

    Each event carries ``{"gate": gate}``: the handler (emu_basic, emu_snap) holds it until
    the file exists, which happens once ``count`` environments are invoking.
    """
    results: list[InvocationResult] = []
    events = [{"gate": str(gate), **event}] * count
    worker = threading.Thread(
        target=lambda: results.extend(emulator.invoke_many(events, concurrency=count))
    )
    worker.start()
    try:
        deadline = time.monotonic() + timeout_s
        while sum(e.state == "invoking" for e in emulator.environments) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} requests never were in flight together")
            time.sleep(0.005)
    finally:
        gate.touch()
        worker.join(timeout_s)
    assert len(results) == count
    return results


def subprocess_env() -> dict[str, str]:
    """The environment for a child Python that must import this checkout's package."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[3] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env
