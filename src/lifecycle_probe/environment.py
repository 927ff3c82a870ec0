"""Per-process facts of this execution environment: INIT timing, start type, sequence, idle.

One runtime process is one environment (DESIGN.md §2). Its state lives here and nowhere
else. It is thread-safe (invocations are numbered by a C counter and tracked in a dict,
whose single operations the GIL makes atomic; a lock guards INIT's end and the events)
and fork-safe: a forked child, as Lambda Managed Instances make for each worker, becomes a
new environment with its own id, INIT and sequence.
"""

from __future__ import annotations

import _thread
import os
import time

from lifecycle_probe.config import variable
from lifecycle_probe.records import (
    COLD,
    MAX_EVENTS,
    PROACTIVE,
    PROVISIONED,
    RESTORED,
    SOURCE_ESTIMATED,
    SOURCE_EXEC_WRAPPER,
    SOURCE_HANDLER_IMPORT,
    SOURCE_PROCESS,
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
    from collections.abc import Iterator, Mapping
    from typing import Any

    from lifecycle_probe.rare_records import RestoreRecord

__all__ = [
    "ON_DEMAND",
    "PROVISIONED_CONCURRENCY",
    "SNAP_START",
    "Environment",
    "Invocation",
    "current_environment",
    "function_facts",
    "process_start_ns",
    "start_new_environment",
]

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
        # (os.open and one read: open() builds a buffered file object for 300 bytes)
        fd = os.open(stat_path, os.O_RDONLY)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
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


def new_environment_id() -> str:
    """A fresh random environment id (16 hex digits; ``uuid`` costs an import)."""
    return os.urandom(8).hex()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


# Lambda's variables that name the function, read when the environment begins.
_FUNCTION_VARIABLES = (
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
)


def function_facts(environ: Mapping[str, str | None]) -> FunctionFacts:
    """The function's identity as Lambda's variables state it."""
    return FunctionFacts(
        function_name=environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        function_version=environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
        memory_mb=_int_or_none(environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")),
        log_group=environ.get("AWS_LAMBDA_LOG_GROUP_NAME"),
        log_stream=environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"),
        execution_env=environ.get("AWS_EXECUTION_ENV"),
    )


class Invocation:
    """One invocation in flight, as its environment numbered and classified it.

    Made on the caller's path by :meth:`Environment.begin_invocation`, so it holds the raw
    numbers only: its :class:`LifecycleFacts` are worked out the first time somebody asks
    (``current()``, or a sink's record, after the response when flushing then), and an
    invocation nobody asks about never pays for them.
    """

    # No __init__: begin_invocation fills every slot, and a Python-level constructor
    # would cost more than the rest of the invocation's bookkeeping.
    __slots__ = (
        "_facts",
        "context",
        "ended",
        "environment",
        "init",
        "previous_end_ns",
        "restore",
        "seq",
        "start",
        "start_ns",
    )
    if TYPE_CHECKING:  # (the slots' types, for the type checker: INIT makes no dict of them)
        environment: Environment
        seq: int
        start: str
        start_ns: int
        # When the previous invocation of this environment ended (None for its first).
        previous_end_ns: int | None
        # The INIT record, on the environment's first invocation only; after a SnapStart
        # restore, the INIT before the snapshot, and the restore's record.
        init: InitRecord | None
        restore: RestoreRecord | None
        # The Lambda context the handler was called with: its request id, ARN and deadline
        # are read from it when the facts or the record are built, not on the caller's path.
        context: Any
        # The handler has returned or raised (the invocation may still be the context
        # variable's value, until the next one replaces it: see facts.py).
        ended: bool
        _facts: LifecycleFacts | None

    def facts(self) -> LifecycleFacts:
        """The facts of this invocation, built once (two threads asking at once may both
        build them: equal, immutable, harmless)."""
        facts = self._facts
        if facts is None:
            facts = self._facts = self.environment.facts_of(self)
        return facts

    def invoked_function_arn(self) -> str | None:
        """The ARN the function was invoked as, if the context has one."""
        # Only a string counts (a test's MagicMock context answers every attribute with a
        # mock), and a context whose attributes raise has none.
        try:
            value = getattr(self.context, "invoked_function_arn", None)
        except Exception:
            return None
        return value if type(value) is str else None


class Environment:
    """The mutable lifecycle state of one environment. Read it through records only."""

    __slots__ = (
        "_function",
        "_function_variables",
        "_lock",
        "_numbers",
        "environment_id",
        "event_received_ns",
        "events",
        "first_start",
        "init_end_ns",
        "init_end_source",
        "init_start_ns",
        "init_start_source",
        "init_type",
        "last_end_ns",
        "pid",
        "restore_end_ns",
        "restore_end_source",
        "restore_start_ns",
        "restored",
        "running",
        "seq",
    )

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        init_start_ns: int | None = None,
        init_start_source: str | None = None,
    ) -> None:
        get = variable if environ is None else environ.get
        self._lock = _thread.allocate_lock()
        self.pid = os.getpid()
        self.environment_id = new_environment_id()
        self.init_type = get("AWS_LAMBDA_INITIALIZATION_TYPE") or ON_DEMAND
        # The variables now, the record at first use: building the first FunctionFacts
        # compiles its constructor (~0.15 ms), which INIT need not pay.
        self._function_variables = {name: get(name) for name in _FUNCTION_VARIABLES}
        self._function: FunctionFacts | None = None
        if init_start_ns is None:
            init_start_ns, init_start_source = _init_start(get(WRAPPER_START_VARIABLE), self.pid)
        self.init_start_ns = init_start_ns
        self.init_start_source = init_start_source or SOURCE_ESTIMATED
        self.init_end_ns: int | None = None
        self.init_end_source = SOURCE_ESTIMATED
        self.restored = False
        # The SnapStart restore (after-restore hook to the runtime's first request after
        # it), when this environment was restored from a snapshot.
        self.restore_start_ns: int | None = None
        self.restore_end_ns: int | None = None
        self.restore_end_source = SOURCE_ESTIMATED
        # Invocation numbers: a C iterator (itertools.count would be one more import at
        # INIT), so that numbering needs no lock of ours.
        self._numbers: Iterator[int] = iter(range(1, 1 << 62))
        # The latest number handed out (0 before the first invocation).
        self.seq = 0
        # The start type of the first invocation (None before it): after a ``cold`` start
        # the environment went from INIT to its first event without a freeze.
        self.first_start: str | None = None
        self.last_end_ns: int | None = None
        self.event_received_ns: int | None = None
        # Invocations running now, by number: more than one only when a test calls a
        # handler from several threads. While exactly one runs, the handler's own threads
        # (where the decorator's context variable is not set) are working for it. An
        # invocation reported as timed out leaves it then, not at its (late) end.
        self.running: dict[int, Invocation] = {}
        # Lifecycle events (stale connections, leaked globals) noted since the last
        # invocation record took them.
        self.events: list[LifecycleEvent] = []

    # -- signals from hooks ------------------------------------------------------------

    @property
    def function(self) -> FunctionFacts:
        """The function's identity, as Lambda's variables stated it when this began."""
        facts = self._function
        if facts is None:
            facts = self._function = function_facts(self._function_variables)
        return facts

    def mark_init_end(self, source: str, at_ns: int | None = None) -> None:
        """INIT is over by ``source``'s account (first exact signal wins)."""
        # Read without the lock: seq only grows, and a stale 0 just means taking the lock.
        if self.seq:  # INIT ended long ago; later signals are ordinary event requests
            return
        strength = _END_STRENGTH.get(source, 0)
        with self._lock:
            if self.restore_start_ns is not None:
                # Restored from a snapshot: INIT ended before it; the runtime's first
                # request for work now ends the restore.
                if source == SOURCE_RUNTIME and self.restore_end_ns is None:
                    self.restore_end_ns = time.time_ns() if at_ns is None else at_ns
                    self.restore_end_source = source
                return
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
        """SnapStart restored this environment from a snapshot: a new environment begins.

        Its INIT is the one before the snapshot, whose start and end the snapshot's memory
        kept (Lambda reports it too, beside the restore); the restore starts now.
        """
        now = time.time_ns() if at_ns is None else at_ns
        with self._lock:
            # Every environment restored from one snapshot shares the memory it had at
            # snapshot time, so the id must be drawn again here or they would all collide.
            self.environment_id = new_environment_id()
            self.pid = os.getpid()
            self.init_type = SNAP_START
            if self.init_end_ns is None:
                # No signal ended INIT before the snapshot: it was over by the restore.
                self.init_end_ns = now
                self.init_end_source = SOURCE_ESTIMATED
            self.restore_start_ns = now
            self.restore_end_ns = None
            self.restore_end_source = SOURCE_ESTIMATED
            self.restored = True
            self._numbers = iter(range(1, 1 << 62))
            self.seq = 0
            self.first_start = None
            self.last_end_ns = None
            self.event_received_ns = None

    # -- the invocation --------------------------------------------------------------
    # The caller of every invocation waits for begin_invocation and end_invocation, so
    # they only number, store and look up; what the numbers mean (the facts, the record)
    # is worked out later, by whoever asks.

    def begin_invocation(self, context: Any, proactive_gap_ns: int, now_ns: int) -> Invocation:
        """Number and classify the invocation starting now, called with the Lambda
        ``context``; the first one gets the INIT record."""
        invocation = Invocation()
        invocation.environment = self
        invocation.seq = seq = next(self._numbers)  # atomic: a C iterator under the GIL
        invocation.start_ns = now_ns
        invocation.context = context
        invocation.ended = False
        invocation._facts = None
        if seq == 1:
            with self._lock:  # INIT's end may still be arriving from the runtime's thread
                self.seq = 1
                received_ns = self.event_received_ns
                invocation.init = init = self._close_init(now_ns)
                invocation.restore = self._close_restore(now_ns)
                start = self._first_start_type(init, received_ns or now_ns, proactive_gap_ns)
                self.first_start = start
        else:
            # (with invocations racing in threads, seq may trail the counter for a moment;
            # event_received_ns only matters to a first invocation: left as it is)
            self.seq = seq
            invocation.init = None
            invocation.restore = None
            start = WARM
        invocation.start = start
        invocation.previous_end_ns = self.last_end_ns
        self.running[seq] = invocation  # a dict store is atomic under the GIL
        return invocation

    def end_invocation(self, invocation: Invocation, end_ns: int) -> bool:
        """The handler of ``invocation`` has returned or raised: the environment may now be
        frozen. Returns whether its record is still to be exported: False when it was
        exported as a timeout just before the deadline (see :meth:`claim_timeout`)."""
        self.last_end_ns = end_ns
        invocation.ended = True
        # Whoever takes the invocation out of ``running`` exports it: this end, or a timeout
        # claimed just before the deadline. dict.pop is atomic under the GIL, so exactly
        # one of them does, with no lock on the way out of every invocation.
        return self.running.pop(invocation.seq, None) is not None

    def running_invocation(self) -> Invocation | None:
        """The invocation running now, if exactly one is (None between invocations)."""
        running = self.running
        if len(running) != 1:
            return None
        try:
            return next(iter(running.values()))
        except (StopIteration, RuntimeError):  # it ended (or another began) meanwhile
            return None

    def claim_timeout(self, seq: int) -> bool:
        """Whether invocation ``seq`` is still running and so to be reported as timed out;
        claims it.

        The decorator (when the handler ends, :meth:`end_invocation`) and the internal
        extension (just before the deadline, here) may race for the same invocation:
        whichever takes it out of ``running`` first exports it, the other nothing.
        """
        return self.running.pop(seq, None) is not None

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

    def _close_init(self, now_ns: int) -> InitRecord:
        if self.init_end_ns is None:
            # No exact signal: INIT ended no later than this invocation began.
            self.init_end_ns = now_ns
            self.init_end_source = SOURCE_ESTIMATED
        return InitRecord(
            environment_id=self.environment_id,
            init_type=self.init_type,
            start_ns=self.init_start_ns,
            end_ns=self.init_end_ns,
            start_source=self.init_start_source,
            end_source=self.init_end_source,
            restored=self.restored,
            pid=self.pid,
        )

    def _close_restore(self, now_ns: int) -> RestoreRecord | None:
        start_ns = self.restore_start_ns
        if start_ns is None:
            return None
        if self.restore_end_ns is None:
            # No request for work seen after the restore: it ended by this invocation.
            self.restore_end_ns = now_ns
            self.restore_end_source = SOURCE_ESTIMATED
        # Loaded into the snapshot by the before-snapshot hook (runtime_hooks); an import
        # here, when that hook did not run, is the probe's own, not the function's.
        from lifecycle_probe.probe_threads import probe_work

        with probe_work():
            from lifecycle_probe.rare_records import RestoreRecord
        return RestoreRecord(
            environment_id=self.environment_id,
            start_ns=start_ns,
            end_ns=self.restore_end_ns,
            end_source=self.restore_end_source,
            pid=self.pid,
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

    def facts_of(self, invocation: Invocation) -> LifecycleFacts:
        """What ``current()`` and the records say of ``invocation``."""
        # The environment's own facts (its id, its INIT) are read now, maybe after the
        # response: they do not change between an invocation's start and its record (a
        # SnapStart restore, which renews them, comes before any invocation).
        now_ns = invocation.start_ns
        last_end_ns = invocation.previous_end_ns
        # (_init_duration_s, _born_ns and the request id inline: built once per invocation
        # on the record's path, where each Python call shows)
        init_end_ns = self.init_end_ns
        restore_start_ns = self.restore_start_ns
        born_ns = self.init_start_ns if restore_start_ns is None else restore_start_ns
        idle_s: float | None = None
        if last_end_ns is not None:
            # (a clock step backwards must not make idle negative)
            idle_s = (now_ns - last_end_ns) / 1e9 if now_ns > last_end_ns else 0.0
        try:
            request_id = getattr(invocation.context, "aws_request_id", None)
        except Exception:  # a context whose attributes raise has none
            request_id = None
        return LifecycleFacts(
            start=invocation.start,
            invocation_seq=invocation.seq,
            environment_id=self.environment_id,
            init_type=self.init_type,
            init_duration_s=(
                None if init_end_ns is None else (init_end_ns - self.init_start_ns) / 1e9
            ),
            init_estimated=SOURCE_ESTIMATED in (self.init_start_source, self.init_end_source),
            idle_s=idle_s,
            environment_age_s=(now_ns - born_ns) / 1e9,
            request_id=request_id if type(request_id) is str else None,
            invoke_start_ns=now_ns,
        )

    def facts_between_invocations(self) -> LifecycleFacts:
        """``current()`` outside an invocation: environment facts only."""
        return LifecycleFacts(
            start=None,
            invocation_seq=self.seq,
            environment_id=self.environment_id,
            init_type=self.init_type,
            init_duration_s=self._init_duration_s(),
            init_estimated=SOURCE_ESTIMATED in (self.init_start_source, self.init_end_source),
            idle_s=None,
            environment_age_s=(time.time_ns() - self._born_ns()) / 1e9,
            request_id=None,
            invoke_start_ns=None,
        )

    def _born_ns(self) -> int:
        # A restored environment began at its restore: the INIT before the snapshot may
        # be days older, and shared by every environment restored from it.
        restore_start_ns = self.restore_start_ns
        return self.init_start_ns if restore_start_ns is None else restore_start_ns

    def _init_duration_s(self) -> float | None:
        end_ns = self.init_end_ns
        return None if end_ns is None else (end_ns - self.init_start_ns) / 1e9


def _init_start(handed_over_stamp: str | None, pid: int) -> tuple[int, str]:
    now_ns = time.time_ns()
    os_start = process_start_ns()
    handed_over = wrapper_start_ns(handed_over_stamp, pid, os_start, now_ns)
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
