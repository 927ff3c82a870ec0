import os
import subprocess
import sys
import time

from lifecycle_probe.environment import (
    WRAPPER_START_VARIABLE,
    Environment,
    clock_tick_ns,
    process_start_ns,
    wrapper_start_ns,
)
from lifecycle_probe.records import SOURCE_ESTIMATED, SOURCE_EXEC_WRAPPER, SOURCE_PROCESS

CHILD = "from lifecycle_probe.environment import process_start_ns; print(process_start_ns())"


def test_process_start_agrees_with_the_wall_clock_within_one_tick():
    # GIVEN a process spawned between two wall-clock readings
    env = {k: v for k, v in os.environ.items() if k != WRAPPER_START_VARIABLE}
    before = time.time_ns()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, env=env)
    after = time.time_ns()
    out, _ = child.communicate(timeout=60)
    # WHEN it reads its own start from the OS
    started = int(out)
    # THEN the figure is the tick at or before the true start: never later than the
    # spawn finished, never earlier than one tick before it began
    tick = clock_tick_ns()
    assert before - tick <= started <= after, (before, started, after, tick)


def test_clock_tick_is_the_resolution_we_document():
    assert clock_tick_ns() == 10_000_000  # SC_CLK_TCK = 100 on Linux x86_64/arm64


def test_missing_proc_gives_none():
    assert process_start_ns("/nonexistent/stat") is None


def test_stat_with_parentheses_in_the_command_name_is_parsed(tmp_path):
    # GIVEN a /proc stat line whose command name contains ") (" and spaces
    with open("/proc/self/stat", "rb") as stat:
        real = stat.read()
    tail = real[real.rindex(b")") + 1 :]
    fake = tmp_path / "stat"
    fake.write_bytes(b"123 (evil) (name x)" + tail)
    # THEN it parses to the same start as the real one (within the time between reads)
    parsed, real_start = process_start_ns(str(fake)), process_start_ns()
    assert parsed is not None
    assert real_start is not None
    assert abs(parsed - real_start) < 5_000_000


def test_wrapper_start_is_believed_only_for_its_own_pid_and_plausible_time():
    now = time.time_ns()
    earliest = now - 15_000_000  # the stamp lies within the start tick + slack
    seconds = f"{(now - 10_000_000) / 1e9:.6f}"
    got = wrapper_start_ns(f"{os.getpid()}:{seconds}", os.getpid(), earliest, now)
    assert got is not None
    assert abs(got - (now - 10_000_000)) < 2_000  # microsecond text, rounding only
    assert wrapper_start_ns(
        f"{os.getpid()}:{seconds.replace('.', ',')}", os.getpid(), earliest, now
    )
    assert wrapper_start_ns(f"1:{seconds}", os.getpid(), earliest, now) is None  # other pid
    too_early = f"{(earliest - 1_000_000_000) / 1e9:.6f}"
    assert wrapper_start_ns(f"{os.getpid()}:{too_early}", os.getpid(), earliest, now) is None
    assert wrapper_start_ns("garbage", os.getpid(), earliest, now) is None
    assert wrapper_start_ns(None, os.getpid(), earliest, now) is None


def test_environment_prefers_the_wrappers_start_then_the_os(monkeypatch):
    os_start = process_start_ns()
    assert os_start is not None
    handed = os_start + 3_000_000
    value = f"{os.getpid()}:{handed // 1_000_000_000}.{handed % 1_000_000_000:09d}"
    env = Environment({WRAPPER_START_VARIABLE: value})
    assert (env.init_start_ns, env.init_start_source) == (handed, SOURCE_EXEC_WRAPPER)
    env = Environment({})
    assert env.init_start_source == SOURCE_PROCESS
    assert abs(env.init_start_ns - os_start) < 5_000_000


def test_without_proc_the_start_is_estimated(monkeypatch):
    monkeypatch.setattr("lifecycle_probe.environment.process_start_ns", lambda: None)
    before = time.time_ns()
    env = Environment({})
    assert env.init_start_source == SOURCE_ESTIMATED
    assert before <= env.init_start_ns <= time.time_ns()
