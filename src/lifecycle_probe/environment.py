"""Per-process facts of this execution environment: INIT timing, start type, sequence, idle.

One runtime process is one environment (DESIGN.md §2). Its state lives here and nowhere
else. It is thread-safe (one lock around the counters) and fork-safe: a forked child, as
Lambda Managed Instances make for each worker, becomes a new environment with its own id,
INIT and sequence.
"""

from __future__ import annotations

import _thread
import os
import time

from lifecycle_probe.records import (
    COLD,
    PROACTIVE,
    PROVISIONED,
    RESTORED,
    SOURCE_ESTIMATED,
    SOURCE_EXEC_WRAPPER,
    SOURCE_HANDLER_IMPORT,
    SOURCE_PROCESS,
    SOURCE_RESTORE,
    SOURCE_RUNTIME,
    SOURCE_SNAPSHOT,
    WARM,
    FunctionFacts,
    InitRecord,
    LifecycleEvent,
    LifecycleFacts,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_new_record = tuple.__new__

# -- INIT start: when did this runtime process start? ----------------------------------------
# Read from the operating system, not guessed. Linux keeps each process's start as a count
# of clock ticks since boot (/proc/self/stat, field 22, counted on CLOCK_BOOTTIME). We turn
# it into wall-clock time by measuring how long ago that was on the same clock. The
# resolution is one tick (1/SC_CLK_TCK, 10 ms on Linux/x86_64 and arm64): the kernel
# truncates, so the figure is the tick at or before the true start, never after it, and at
# most one tick early.


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


# The exec wrapper's stamp refines the OS's start, whose resolution is one tick: it is
# believed within that tick plus ``slack_ns``, the time from the process's start to bash
# reading EPOCHREALTIME (100 ms: bash needs 1-3 ms, but a loaded machine can delay the
# exec after the fork by tens; a Python that ran first in the same process, as the
# OpenTelemetry layer's opentelemetry-instrument does, takes hundreds, importing the SDK).
def wrapper_start_ns(
    value: str | None,
    pid: int,
    earliest_ns: int | None,
    now_ns: int,
    tick_ns: int | None = None,
    slack_ns: int = 100_000_000,
) -> int | None:
    """A finer INIT start handed over by the exec wrapper as ``PID:EPOCH_SECONDS``.

    The wrapper writes bash's ``$$:$EPOCHREALTIME``. It is only believed for the process
    that wrote it (the wrapper ``exec``s the runtime, so the pid is the same; a child process
    inheriting the variable must not) and, when the OS's start ``earliest_ns`` is known,
    only as a refinement within the OS's start tick: between ``earliest_ns`` and
    ``earliest_ns`` + one tick (``tick_ns``, by default the OS's) + ``slack_ns`` for
    bash's own start, and not after now. A later stamp means the process ran something else
    before the wrapper (another layer's wrapper that runs a Python first, in the same
    pid): INIT began at the OS's start, and the caller uses that.
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
    if start_ns > now_ns:
        return None
    if earliest_ns is not None:
        latest_ns = earliest_ns + (clock_tick_ns() if tick_ns is None else tick_ns)
        if not earliest_ns <= start_ns <= latest_ns + slack_ns:
            return None
    return start_ns


ON_DEMAND = "on-demand"
PROVISIONED_CONCURRENCY = "provisioned-concurrency"
SNAP_START = "snap-start"

# Events kept for one invocation record at most: a loop reusing a dead connection must
# not grow memory without bound.
MAX_EVENTS = 100

# Variable through which the layer's exec wrapper hands over a finer INIT start.
WRAPPER_START_VARIABLE = "_LIFECYCLE_PROBE_INIT_START"

# Signals of INIT end, weakest first. A stronger signal replaces a weaker one; the first
# signal of a given strength wins (the runtime asks for events again and again).
_END_STRENGTH = {
    SOURCE_ESTIMATED: 0,
    SOURCE_HANDLER_IMPORT: 1,
    SOURCE_SNAPSHOT: 2,
    SOURCE_RUNTIME: 2,
}


# Threads doing the probe's own work (the internal extension, the OpenTelemetry sink's
# exporter): their connections (to the collector) are not the function's and are never
# reported as stale.
probe_threads: set[int] = set()


def mark_probe_thread() -> None:
    """Declare the calling thread the probe's own."""
    probe_threads.add(_thread.get_ident())


def new_environment_id() -> str:
    """A fresh random environment id (16 hex digits; ``uuid`` costs an import)."""
    return os.urandom(8).hex()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def function_facts(environ: Mapping[str, str]) -> FunctionFacts:
    """The function's identity as Lambda's variables state it."""
    return FunctionFacts(
        environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
        _int_or_none(environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")),
        environ.get("AWS_LAMBDA_LOG_GROUP_NAME"),
        environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"),
        environ.get("AWS_EXECUTION_ENV"),
    )


class Environment:
    """The mutable lifecycle state of one environment. Read it through records only."""

    __slots__ = (
        "_lock",
        "environment_id",
        "event_received_ns",
        "events",
        "first_start",
        "function",
        "in_flight",
        "in_flight_capture",
        "in_flight_facts",
        "init_end_ns",
        "init_end_source",
        "init_start_ns",
        "init_start_source",
        "init_type",
        "last_end_ns",
        "pid",
        "restored",
        "seq",
        "timeout_reported",
    )

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        init_start_ns: int | None = None,
        init_start_source: str | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._lock = _thread.allocate_lock()
        self.pid = os.getpid()
        self.environment_id = new_environment_id()
        self.init_type = env.get("AWS_LAMBDA_INITIALIZATION_TYPE") or ON_DEMAND
        self.function = function_facts(env)
        if init_start_ns is None:
            init_start_ns, init_start_source = _init_start(env, self.pid)
        self.init_start_ns = init_start_ns
        self.init_start_source = init_start_source or SOURCE_ESTIMATED
        self.init_end_ns: int | None = None
        self.init_end_source = SOURCE_ESTIMATED
        self.restored = False
        self.seq = 0
        # The start type of the first invocation (None before it): after a ``cold`` start
        # the environment went from INIT to its first event without a freeze.
        self.first_start: str | None = None
        self.last_end_ns: int | None = None
        self.event_received_ns: int | None = None
        # Invocations running now (more than one only when a test calls a handler from
        # several threads) and the facts of the latest, for current() in the handler's
        # own threads, where the decorator's context variable is not set.
        self.in_flight = 0
        self.in_flight_facts: LifecycleFacts | None = None
        # What a timeout report needs of the invocation in flight (set by the decorator
        # when it has sinks), and the sequence number of the last invocation reported as
        # timed out: its own record, should it finish after all, is not exported twice.
        self.in_flight_capture: tuple[Any, ...] | None = None
        self.timeout_reported = 0
        # Lifecycle events (stale connections, leaked globals) noted since the last
        # invocation record took them.
        self.events: list[LifecycleEvent] = []

    # -- signals from hooks ------------------------------------------------------------

    def mark_init_end(self, source: str, at_ns: int | None = None) -> None:
        """INIT is over by ``source``'s account (first exact signal wins)."""
        # Read without the lock: seq only grows, and a stale 0 just means taking the lock.
        if self.seq:  # INIT ended long ago; later signals are ordinary event requests
            return
        strength = _END_STRENGTH.get(source, 0)
        with self._lock:
            if self.init_end_ns is not None:
                current = _END_STRENGTH.get(self.init_end_source, 0)
                if strength <= current:
                    return
            self.init_end_ns = time.time_ns() if at_ns is None else at_ns
            self.init_end_source = source

    def mark_event_received(self, at_ns: int | None = None) -> None:
        """The runtime has just been handed an event (the end of any INIT-to-invoke gap)."""
        # One runtime thread asks for events, so a plain store (atomic under the GIL) does.
        self.event_received_ns = time.time_ns() if at_ns is None else at_ns

    def mark_restored(self, at_ns: int | None = None) -> None:
        """SnapStart restored this environment from a snapshot: a new environment begins."""
        now = time.time_ns() if at_ns is None else at_ns
        with self._lock:
            # Every environment restored from one snapshot shares the memory it had at
            # snapshot time, so the id must be drawn again here or they would all collide.
            self.environment_id = new_environment_id()
            self.pid = os.getpid()
            self.init_type = SNAP_START
            self.init_start_ns = now
            self.init_start_source = SOURCE_RESTORE
            self.init_end_ns = None
            self.init_end_source = SOURCE_ESTIMATED
            self.restored = True
            self.seq = 0
            self.first_start = None
            self.last_end_ns = None
            self.event_received_ns = None

    # -- the invocation --------------------------------------------------------------

    def begin_invocation(
        self, request_id: str | None, proactive_gap_ns: int, now_ns: int
    ) -> tuple[LifecycleFacts, InitRecord | None]:
        """Number and classify the invocation starting now; the first one gets the INIT record."""
        with self._lock:
            self.seq = seq = self.seq + 1
            received_ns = self.event_received_ns
            self.event_received_ns = None
            last_end_ns = self.last_end_ns
            if seq == 1:
                init = self._close_init(now_ns)
                start = self._first_start_type(init, received_ns or now_ns, proactive_gap_ns)
                self.first_start = start
            else:
                init = None
                start = WARM
            end_ns = self.init_end_ns
            # tuple.__new__ directly: this runs on every invocation, and a Python-level
            # __new__ with ten arguments costs more than the rest of this method.
            facts = _new_record(
                LifecycleFacts,
                (
                    start,
                    seq,
                    self.environment_id,
                    self.init_type,
                    None if end_ns is None else (end_ns - self.init_start_ns) / 1e9,
                    SOURCE_ESTIMATED in (self.init_start_source, self.init_end_source),
                    # (a clock step backwards must not make idle negative; no max(): hot path)
                    None
                    if last_end_ns is None
                    else (now_ns - last_end_ns if now_ns > last_end_ns else 0) / 1e9,
                    (now_ns - self.init_start_ns) / 1e9,
                    request_id,
                    now_ns,
                ),
            )
            self.in_flight += 1
            self.in_flight_facts = facts
        return facts, init

    def add_event(self, event: LifecycleEvent) -> None:
        """Note a lifecycle event; the record of the invocation in flight will carry it."""
        with self._lock:
            if len(self.events) < MAX_EVENTS:
                self.events.append(event)

    def take_events(self) -> tuple[LifecycleEvent, ...]:
        """The events noted since the last call."""
        with self._lock:
            taken, self.events = tuple(self.events), []
        return taken

    def claim_timeout(self, seq: int) -> bool:
        """Whether invocation ``seq`` is still running and so to be reported as timed out;
        claims it.

        The decorator (when the handler ends, :meth:`end_invocation`) and the internal
        extension (just before the deadline, here) may race for the same invocation:
        exactly one exports it.
        """
        with self._lock:
            if self.timeout_reported == seq:
                return False
            if self.in_flight_facts is None or self.in_flight_facts.invocation_seq != seq:
                return False  # it has finished: its own record goes out
            self.timeout_reported = seq
            return True

    def end_invocation(self, end_ns: int, seq: int = 0) -> bool:
        """The handler of invocation ``seq`` has returned or raised: the environment may now
        be frozen. Returns whether its record is still to be exported: False when it was
        exported as a timeout just before the deadline (see :meth:`claim_timeout`)."""
        with self._lock:
            self.last_end_ns = end_ns
            self.in_flight -= 1
            if not self.in_flight:
                self.in_flight_facts = None
                self.in_flight_capture = None
            return self.timeout_reported != seq

    def _close_init(self, now_ns: int) -> InitRecord:
        if self.init_end_ns is None:
            # No exact signal: INIT ended no later than this invocation began.
            self.init_end_ns = now_ns
            self.init_end_source = SOURCE_ESTIMATED
        return InitRecord(
            self.environment_id,
            self.init_type,
            self.init_start_ns,
            self.init_end_ns,
            self.init_start_source,
            self.init_end_source,
            self.restored,
            self.pid,
        )

    def _first_start_type(self, init: InitRecord, received_ns: int, proactive_gap_ns: int) -> str:
        # snap-start without our after-restore hook having run (no snapshot_restore_py,
        # or the probe applied after the restore) is still a restore.
        if self.restored or self.init_type == SNAP_START:
            return RESTORED
        if self.init_type == PROVISIONED_CONCURRENCY:
            return PROVISIONED
        # A gap between INIT end and the event is only measurable when INIT end is known;
        # an estimated end is the invocation itself, so it can never look proactive.
        if init.end_source != SOURCE_ESTIMATED and received_ns - init.end_ns > proactive_gap_ns:
            return PROACTIVE
        return COLD

    def facts_between_invocations(self) -> LifecycleFacts:
        """``current()`` outside an invocation: environment facts only."""
        now_ns = time.time_ns()
        end_ns = self.init_end_ns
        return LifecycleFacts(
            None,
            self.seq,
            self.environment_id,
            self.init_type,
            None if end_ns is None else (end_ns - self.init_start_ns) / 1e9,
            SOURCE_ESTIMATED in (self.init_start_source, self.init_end_source),
            None,
            (now_ns - self.init_start_ns) / 1e9,
            None,
            None,
        )


def _init_start(environ: Mapping[str, str], pid: int) -> tuple[int, str]:
    now_ns = time.time_ns()
    os_start = process_start_ns()
    handed_over = wrapper_start_ns(environ.get(WRAPPER_START_VARIABLE), pid, os_start, now_ns)
    if handed_over is not None:
        return handed_over, SOURCE_EXEC_WRAPPER
    if os_start is not None:
        return os_start, SOURCE_PROCESS
    # Without /proc the best we know is that INIT began before the probe was imported.
    return now_ns, SOURCE_ESTIMATED


_current = Environment()


def current_environment() -> Environment:
    """This process's environment."""
    return _current


def start_new_environment(
    environ: Mapping[str, str] | None = None,
    *,
    init_start_ns: int | None = None,
    init_start_source: str | None = None,
) -> Environment:
    """Replace this process's environment (after fork, or in tests) and return the new one."""
    global _current
    _current = Environment(
        environ, init_start_ns=init_start_ns, init_start_source=init_start_source
    )
    return _current


def _after_fork_in_child() -> None:
    # The child's own /proc start is the fork: its INIT begins there, under a new id.
    try:
        start_new_environment()
    except Exception:  # never break a fork
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)
