"""When did this runtime process start? Read from the operating system, not guessed.

Linux keeps each process's start as a count of clock ticks since boot
(``/proc/self/stat``, field 22, counted on ``CLOCK_BOOTTIME``). We turn it into wall-clock
time by measuring how long ago that was on the same clock. The resolution is one tick
(``1/SC_CLK_TCK``, 10 ms on Linux/x86_64 and arm64): the kernel truncates, so the figure is
the tick at or before the true start, never after it, and at most one tick early.
"""

from __future__ import annotations

import os
import time


def clock_tick_ns() -> int:
    """Length of one kernel clock tick in nanoseconds (the resolution of the start time)."""
    return 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def process_start_ns(stat_path: str = "/proc/self/stat") -> int | None:
    """Wall-clock start of this process in epoch nanoseconds, or ``None`` if unknowable."""
    try:
        with open(stat_path, "rb") as stat:
            data = stat.read()
        # The command name (field 2) is in parentheses and may contain spaces or ')':
        # everything after the last ')' is fields 3 onwards, so field 22 is index 19.
        start_ticks = int(data[data.rindex(b")") + 2 :].split()[19])
        tick_ns = clock_tick_ns()
        boot_now_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        wall_now_ns = time.time_ns()
    except (OSError, ValueError, IndexError, AttributeError):
        # No /proc (macOS, some sandboxes) or no CLOCK_BOOTTIME: the caller estimates.
        return None
    return wall_now_ns - (boot_now_ns - start_ticks * tick_ns)


def wrapper_start_ns(
    value: str | None, pid: int, earliest_ns: int | None, now_ns: int
) -> int | None:
    """A finer INIT start handed over by the exec wrapper as ``PID:EPOCH_SECONDS``.

    The wrapper writes bash's ``$$:$EPOCHREALTIME``. It is only believed for the process
    that wrote it (the wrapper ``exec``s the runtime, so the pid is the same; a child process
    inheriting the variable must not) and only when it lies between the OS's start tick and
    now.
    """
    if not value:
        return None
    try:
        pid_text, _, seconds = value.partition(":")
        if int(pid_text) != pid:
            return None
        # EPOCHREALTIME uses the locale's decimal separator.
        whole, _, fraction = seconds.strip().replace(",", ".").partition(".")
        start_ns = int(whole) * 1_000_000_000 + int((fraction + "000000000")[:9])
    except ValueError:
        return None
    if earliest_ns is not None and not earliest_ns <= start_ns <= now_ns:
        return None
    return start_ns
