"""The exec wrapper's start stamp is believed only as a refinement of the OS's start tick.

The OS says when the runtime process started, to one tick (10 ms, truncated); the wrapper's
``$$:$EPOCHREALTIME`` is finer but is taken when bash reaches it. Chained behind a wrapper
that runs a Python first in the same process (the OpenTelemetry layer's otel-instrument
runs opentelemetry-instrument, which execs the next wrapper), the stamp comes after that
Python's run: believing it would leave that time out of INIT.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lifecycle_probe.environment import (
    WRAPPER_START_VARIABLE,
    Environment,
    clock_tick_ns,
    process_start_ns,
    wrapper_start_ns,
)
from lifecycle_probe.records import SOURCE_EXEC_WRAPPER, SOURCE_PROCESS

TICK = 10_000_000
MS = 1_000_000
PID = 4242
OS_START = 1_700_000_000_000_000_000  # a tick boundary, as the OS gives it
NOW = OS_START + 5_000 * MS


def stamp(ns: int, pid: int = PID) -> str:
    """The wrapper's text for ``ns``: bash's EPOCHREALTIME has microseconds."""
    return f"{pid}:{ns // 1_000_000_000}.{ns % 1_000_000_000 // 1_000:06d}"


def believed(ns: int) -> int | None:
    return wrapper_start_ns(stamp(ns), PID, OS_START, NOW, tick_ns=TICK)


def test_a_stamp_within_the_start_tick_refines_it():
    assert believed(OS_START) == OS_START
    assert believed(OS_START + 7_123_000) == OS_START + 7_123_000


def test_a_stamp_within_one_tick_and_the_slack_for_bashs_start_is_believed():
    # bash needs a few milliseconds from its exec to the stamp, on a busy machine more
    assert believed(OS_START + TICK + 3 * MS) == OS_START + TICK + 3 * MS
    assert believed(OS_START + TICK + 100 * MS) == OS_START + TICK + 100 * MS


def test_a_stamp_taken_after_a_first_python_ran_in_the_process_is_not_believed():
    # otel-instrument first: opentelemetry-instrument's Python (tens of milliseconds and
    # more) ran in the process before the probe's wrapper took its stamp
    assert believed(OS_START + TICK + 101 * MS) is None
    assert believed(OS_START + 180 * MS) is None


def test_a_stamp_before_the_os_start_or_after_now_is_not_believed():
    assert believed(OS_START - 1_000) is None
    assert wrapper_start_ns(stamp(NOW + 1_000), PID, None, NOW) is None


def test_without_the_os_start_any_stamp_up_to_now_is_taken():
    assert wrapper_start_ns(stamp(NOW - 900 * MS), PID, None, NOW) == NOW - 900 * MS


def test_the_slack_and_the_tick_default_to_100_ms_and_the_oss_tick():
    assert clock_tick_ns() == TICK
    edge = OS_START + TICK + 100 * MS
    assert wrapper_start_ns(stamp(edge), PID, OS_START, NOW) == edge
    assert wrapper_start_ns(stamp(edge + 1_000), PID, OS_START, NOW) is None
    assert wrapper_start_ns(stamp(edge + 1_000), PID, OS_START, NOW, slack_ns=101 * MS)


def test_another_pid_or_garbage_is_not_believed():
    assert wrapper_start_ns(stamp(OS_START + MS, pid=PID + 1), PID, OS_START, NOW) is None
    assert wrapper_start_ns(f"{PID}:soon", PID, OS_START, NOW) is None
    assert wrapper_start_ns("", PID, OS_START, NOW) is None


def test_an_environment_whose_process_ran_a_python_first_starts_at_the_os_start():
    # GIVEN a stamp of this very process taken long after its start (as after a first
    # Python in the same pid)
    os_start = process_start_ns()
    assert os_start is not None
    late = stamp(os_start + 300 * MS, pid=os.getpid())
    # WHEN the environment reads its INIT start
    environment = Environment({WRAPPER_START_VARIABLE: late})
    # THEN it is the OS's start (read again: within the time between reads)
    assert environment.init_start_source == SOURCE_PROCESS
    assert abs(environment.init_start_ns - os_start) < 5 * MS
    # and a stamp within the start tick is taken as is
    early = os_start + 2 * MS
    environment = Environment({WRAPPER_START_VARIABLE: stamp(early, pid=os.getpid())})
    assert environment.init_start_source == SOURCE_EXEC_WRAPPER
    assert abs(environment.init_start_ns - early) < 1_000


WRAPPER = Path(__file__).resolve().parents[2] / "layer" / "lifecycle-probe"
SHOW_START = (
    "import os, sys\n"
    "from lifecycle_probe.environment import Environment\n"
    "e = Environment()\n"
    "print(e.init_start_source)\n"
)


def run_behind(*command: str) -> str:
    completed = subprocess.run(
        [*command, sys.executable, "-c", SHOW_START],
        env={"PATH": os.environ["PATH"], "_HANDLER": "app.handler"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return completed.stdout.strip()


def test_behind_the_wrapper_alone_the_stamp_is_the_start():
    assert run_behind(str(WRAPPER)) == SOURCE_EXEC_WRAPPER


def test_behind_a_python_that_ran_first_in_the_same_process_the_os_start_is():
    # GIVEN a Python that runs first in the process, for longer than the tick and the
    # slack, then execs the wrapper (as opentelemetry-instrument does)
    first = "import os, sys, time\ntime.sleep(0.3)\nos.execv(sys.argv[1], sys.argv[1:])\n"
    assert run_behind(sys.executable, "-c", first, str(WRAPPER)) == SOURCE_PROCESS
