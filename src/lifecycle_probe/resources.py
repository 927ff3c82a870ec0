"""/tmp and memory across the reuse of an environment: what each invocation leaves behind.

An environment keeps its ``/tmp`` and its process memory from one invocation to the next.
After each invocation the probe reads:

- **/tmp**: the bytes used in the temporary directory (``TMPDIR`` if set, else ``/tmp``)
  and their change since the previous invocation of the environment. Where the directory
  is a filesystem of its own (on Lambda ``/tmp`` is a mount point: ``os.path.ismount``,
  asked once per directory), one ``os.statvfs`` call, O(1) whatever it holds: used =
  (blocks - free blocks) x fragment size. Elsewhere (a local run, a shared ``/tmp``) a
  walk of at most :data:`MAX_WALK_ENTRIES` entries, summing the blocks each file and
  subdirectory occupies (``st_blocks`` x 512, so block-rounded as statvfs counts). A
  directory with more entries than that is a shared one (a developer's ``/tmp``), not the
  environment's own: one warning, and it is not measured (nor walked) again.
- **memory**: the resident set size from ``/proc/self/statm`` (one ``pread`` of the file,
  kept open), beside the peak (``faas.mem_usage``, from ``getrusage``), and its share of
  ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``.

Two warnings, each once per environment:

- /tmp use crossing ``tmp_warn_share`` (default 0.8) of ``AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE``
  (MB, Lambda's default 512);
- steady memory growth across warm invocations (a leak across reuse): see
  :func:`steady_growth` for the rule.
"""

from __future__ import annotations

import os
from itertools import pairwise

from lifecycle_probe.config import variable, variable_reader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_WALK_ENTRIES",
    "MEMORY_MIN_SAMPLES",
    "MIB",
    "ResourceWatch",
    "ephemeral_storage_bytes",
    "follow_tmp_warn_share",
    "forget",
    "measure",
    "resource_watch",
    "rss_bytes",
    "statvfs_used",
    "steady_growth",
    "temporary_directory",
    "walk_used",
]

MIB = 1024 * 1024

# The walk of a temporary directory that is no filesystem of its own stops here.
MAX_WALK_ENTRIES = 1000
# Lambda's default ephemeral storage, in MB.
DEFAULT_EPHEMERAL_MB = 512

# Steady memory growth (see steady_growth).
MEMORY_WINDOW = 20  # warm invocations kept
MEMORY_MIN_SAMPLES = 10  # at least this many before a verdict
MEMORY_MIN_RISING_SHARE = 0.7  # of the steps between samples that rise
MEMORY_MIN_TOTAL_GROWTH = 4 * MIB  # over the samples looked at
MEMORY_MIN_RATE = 64 * 1024  # bytes per invocation, least-squares


def temporary_directory(environ: Any = None) -> str:
    """The directory measured: ``TMPDIR`` when set (the local Lambda gives each environment
    its own), else ``/tmp``."""
    if environ is None:
        return _tmpdir() or "/tmp"
    return environ.get("TMPDIR") or "/tmp"


# Read after every invocation, never cached: a test (or the function) may set TMPDIR
# between invocations.
_tmpdir = variable_reader("TMPDIR")
_ephemeral_storage = variable_reader("AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE")


def statvfs_used(path: str) -> int:
    """Bytes used on the filesystem holding ``path`` (one system call)."""
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def walk_used(path: str, max_entries: int = MAX_WALK_ENTRIES) -> tuple[int, bool]:
    """Bytes the files and directories under ``path`` occupy (``st_blocks`` x 512), and
    whether the walk visited all of them (False: it stopped at ``max_entries``)."""
    used = 0
    seen = 0
    pending = [path]
    while pending:
        try:
            scan = os.scandir(pending.pop())
        except OSError:
            continue  # gone, or not ours to read
        with scan:
            for entry in scan:
                seen += 1
                if seen > max_entries:
                    return used, False
                try:
                    stat = entry.stat(follow_symlinks=False)
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                except OSError:
                    continue  # removed while we looked
                used += stat.st_blocks * 512
    return used, True


STATM = "/proc/self/statm"


def rss_bytes(statm: str = STATM) -> int | None:
    """Resident set size of this process, from ``/proc/self/statm`` (None without /proc)."""
    if statm is STATM and _statm and _page:
        # After every invocation: the file open and the page size known, one pread and its
        # parsing, without the two calls more (~0.3 us) of the general path below, which
        # deals with anything else (a descriptor no longer ours, no /proc).
        try:
            data = os.pread(_statm[0], 128, 0)
            if data.count(b" ") == 6:
                return int(data.split(None, 2)[1]) * _page[0]
        except (OSError, ValueError):
            pass
    try:
        if statm == STATM:
            data = _read_own_statm()
        else:
            fd = os.open(statm, os.O_RDONLY)
            try:
                data = os.read(fd, 128)
            finally:
                os.close(fd)
        return int(data.split(None, 2)[1]) * _page_size()
    except (OSError, ValueError, IndexError):
        return None


# This process's own /proc/self/statm, kept open: opening, reading and closing it after
# every invocation took ~6 us here, one pread of the open file ~1 us (procfs regenerates
# the text at each read from offset 0). /proc/self is resolved at the open: a forked
# child, whose inherited descriptor still shows its parent, closes it (at the fork, as
# spans.py reseeds its ids there) and opens its own. os.open makes it close-on-exec.
_statm: list[int] = []


def _read_own_statm() -> bytes:
    if _statm:
        try:
            data = os.pread(_statm[0], 128, 0)
            # statm is seven numbers: anything else means the descriptor is no longer
            # ours (closed by the function, its number reused): open the file anew.
            if data.count(b" ") == 6:
                return data
        except OSError:
            pass  # closed behind our back: open it anew
        _statm.clear()  # (not closed: the number may be someone else's file now)
    fd = os.open(STATM, os.O_RDONLY)
    _statm.append(fd)
    return os.pread(fd, 128, 0)


def _forget_statm_after_fork() -> None:
    if _statm:
        inherited = _statm.pop()
        try:
            os.close(inherited)  # the child's copy of the parent's file
        except OSError:
            pass


os.register_at_fork(after_in_child=_forget_statm_after_fork)


_page: list[int] = []


def _page_size() -> int:
    if not _page:
        _page.append(os.sysconf("SC_PAGE_SIZE"))
    return _page[0]


def ephemeral_storage_bytes(environ: Any = None) -> int:
    """``AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE`` (MB) in bytes; Lambda's default 512 MB."""
    if environ is None:
        raw = _ephemeral_storage()
    else:
        raw = environ.get("AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE")
    try:
        mb = int(str(raw or "").strip())
    except ValueError:
        mb = 0
    return (mb if mb > 0 else DEFAULT_EPHEMERAL_MB) * MIB


def steady_growth(samples: list[int]) -> float | None:
    """The growth rate in bytes per invocation when ``samples`` (RSS after consecutive warm
    invocations, oldest first) grow steadily, else None.

    Steady means all of: at least :data:`MEMORY_MIN_SAMPLES` samples; a least-squares slope
    of at least :data:`MEMORY_MIN_RATE` bytes per invocation; at least
    :data:`MEMORY_MIN_RISING_SHARE` of the steps between samples rise; and the last sample
    at least :data:`MEMORY_MIN_TOTAL_GROWTH` above the first. A one-off jump (a lazy cache
    filled once) fails the rising share; noise around a level fails the slope and the
    total; a slow creep under the floor is not worth a warning yet.
    """
    n = len(samples)
    if n < MEMORY_MIN_SAMPLES:
        return None
    if samples[-1] - samples[0] < MEMORY_MIN_TOTAL_GROWTH:
        return None
    rising = sum(1 for a, b in pairwise(samples) if b > a)
    if rising < MEMORY_MIN_RISING_SHARE * (n - 1):
        return None
    mean_x = (n - 1) / 2
    mean_y = sum(samples) / n
    covariance = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(samples))
    variance = sum((i - mean_x) ** 2 for i in range(n))
    slope = covariance / variance
    return slope if slope >= MEMORY_MIN_RATE else None


class Reading:
    """What one invocation's end measured, and the warnings it crossed."""

    __slots__ = ("growth_rate", "rss", "tmp_crossed", "tmp_growth", "tmp_limit", "tmp_used")

    def __init__(self) -> None:
        self.rss: int | None = None
        self.tmp_used: int | None = None
        self.tmp_growth: int | None = None
        self.tmp_limit = 0
        self.tmp_crossed = False  # /tmp crossed the share in this invocation (first time)
        self.growth_rate: float | None = None  # steady growth found in this invocation


class ResourceWatch:
    """/tmp and memory across the invocations of one environment (reset for a new one)."""

    def __init__(self, tmp_warn_share: float) -> None:
        self.tmp_warn_share = tmp_warn_share
        self._environment_id: str | None = None
        self._last_tmp: int | None = None
        self._rss: list[int] = []
        self._tmp_warned = False
        self._memory_warned = False
        self._mounts: dict[str, bool] = {}
        # Directories whose walk hit its bound: not walked again.
        self._too_big: set[str] = set()

    def _reset(self, environment_id: str) -> None:
        self._environment_id = environment_id
        self._last_tmp = None
        self._rss = []
        self._tmp_warned = False
        self._memory_warned = False

    def tmp_used(self, path: str) -> int | None:
        """Bytes used in ``path``: statvfs on a mount point, else the bounded walk."""
        mount = self._mounts.get(path)
        if mount is None:
            mount = self._mounts[path] = os.path.ismount(path)
        try:
            if mount:
                return statvfs_used(path)
        except OSError:
            return None
        if path in self._too_big or not os.path.isdir(path):
            return None
        used, complete = walk_used(path)
        if complete:
            return used
        # A shared directory (a developer's /tmp): not this environment's, and not worth a
        # bounded walk on every invocation. Given up; said once where it is a surprise (in
        # a Lambda function), silently in a script or a test run.
        self._too_big.add(path)
        if not variable("AWS_LAMBDA_FUNCTION_NAME"):
            return None
        from lifecycle_probe._safe import warn_once

        warn_once(
            "resources:walk",
            "lifecycle_probe: %s is no filesystem of its own and holds more than %d entries: "
            "its use is not measured (give the function a TMPDIR of its own to measure it)",
            path,
            MAX_WALK_ENTRIES,
        )
        return None

    def after_invocation(self, environment_id: str, seq: int) -> Reading:
        """Measure the end of invocation ``seq`` of environment ``environment_id``."""
        if environment_id != self._environment_id:
            self._reset(environment_id)
        reading = Reading()
        reading.rss = rss = rss_bytes()
        reading.tmp_used = used = self.tmp_used(temporary_directory())
        if used is not None:
            if self._last_tmp is not None:
                reading.tmp_growth = used - self._last_tmp
            self._last_tmp = used
            reading.tmp_limit = limit = ephemeral_storage_bytes()
            if not self._tmp_warned and used >= self.tmp_warn_share * limit:
                self._tmp_warned = reading.tmp_crossed = True
        if rss is not None and seq > 1 and not self._memory_warned:
            # Warm invocations only: the first one pays for INIT's leftovers and lazy set-up.
            samples = self._rss
            samples.append(rss)
            if len(samples) > MEMORY_WINDOW:
                del samples[0]
            # (steady_growth's own first two tests, made here: on most invocations they
            # settle it, without its call)
            if (
                len(samples) < MEMORY_MIN_SAMPLES
                or samples[-1] - samples[0] < MEMORY_MIN_TOTAL_GROWTH
            ):
                rate = None
            else:
                rate = steady_growth(samples)
            if rate is not None:
                self._memory_warned = True
                reading.growth_rate = rate
        return reading


_watch: list[ResourceWatch] = []


def forget() -> None:
    """Forget the process's watch (tests that simulate a new runtime process)."""
    _watch.clear()


def follow_tmp_warn_share(share: float) -> None:
    """The process-wide share in force changed (installation.py): the watch, if made
    already, uses it from now on."""
    if _watch:
        _watch[0].tmp_warn_share = share


def resource_watch() -> ResourceWatch:
    """The process's watch, made when first needed, with the ``tmp_warn_share`` in force
    (a process-wide option: the first probe's, or one an argument asked for; else the
    variables')."""
    if not _watch:
        from lifecycle_probe.installation import installed_options, process_wide_value

        share = process_wide_value("tmp_warn_share")
        if share is None:  # (no enabled probe or install() has run: a direct caller)
            from lifecycle_probe.config import Config

            share = Config.resolve(**installed_options()).tmp_warn_share
        _watch.append(ResourceWatch(share))
    return _watch[0]


def measure(environment: Any, facts: Any) -> Reading | None:
    """Measure the end of the invocation ``facts`` describes; note its warnings as events of
    ``environment`` and log lines. Never raises."""
    try:
        watch = _watch[0] if _watch else resource_watch()
        reading = watch.after_invocation(facts.environment_id, facts.invocation_seq)
    except Exception as exc:
        from lifecycle_probe._safe import report_failure

        report_failure("/tmp and memory reading", exc)
        return None
    if reading.tmp_crossed or reading.growth_rate is not None:
        try:
            _warn(reading, environment, facts)
        except Exception as exc:
            from lifecycle_probe._safe import report_failure

            report_failure("/tmp and memory warning", exc)
    return reading


def _warn(reading: Reading, environment: Any, facts: Any) -> None:
    import time

    from lifecycle_probe.loglines import MEMORY_GROWTH, TMP_THRESHOLD, WARNING, write_line
    from lifecycle_probe.records import MEMORY_EVENT, TMP_EVENT, LifecycleEvent

    now_ns = time.time_ns()
    watch = resource_watch()
    if reading.tmp_crossed and reading.tmp_used is not None:
        used, limit = reading.tmp_used, reading.tmp_limit
        environment.add_event(
            LifecycleEvent(
                name=TMP_EVENT,
                time_ns=now_ns,
                attributes=(
                    ("lifecycle.tmp.used_bytes", used),
                    ("lifecycle.tmp.limit_bytes", limit),
                    ("lifecycle.tmp.warn_share", watch.tmp_warn_share),
                ),
            )
        )
        write_line(
            TMP_THRESHOLD,
            WARNING,
            f"lifecycle_probe: /tmp holds {used / MIB:.1f} MB after invocation "
            f"{facts.invocation_seq} of this environment, {used / limit:.0%} of its "
            f"{limit // MIB} MB ephemeral storage (warning at {watch.tmp_warn_share:.0%}); "
            "files left in /tmp survive into the next invocations",
            {
                "tmp_used_bytes": used,
                "tmp_limit_bytes": limit,
                "tmp_warn_share": watch.tmp_warn_share,
            },
            facts=facts,
            function=environment.function,
        )
    rate = reading.growth_rate
    if rate is not None:
        samples = len(watch._rss)
        environment.add_event(
            LifecycleEvent(
                name=MEMORY_EVENT,
                time_ns=now_ns,
                attributes=(
                    ("lifecycle.memory.growth_bytes_per_invocation", round(rate)),
                    ("lifecycle.memory.rss_bytes", reading.rss or 0),
                    ("lifecycle.memory.window", samples),
                ),
            )
        )
        write_line(
            MEMORY_GROWTH,
            WARNING,
            f"lifecycle_probe: memory grows steadily across warm invocations: "
            f"{rate / MIB:.2f} MB per invocation over the last {samples}, "
            f"RSS {(reading.rss or 0) / MIB:.1f} MB after invocation {facts.invocation_seq}; "
            "something kept in a global grows with each request (a leak across reuse)",
            {
                "memory_growth_bytes_per_invocation": round(rate),
                "memory_rss_bytes": reading.rss,
                "memory_window": samples,
            },
            facts=facts,
            function=environment.function,
        )
