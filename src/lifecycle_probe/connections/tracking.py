"""Per-connection lifecycle state and the three stale-reuse outcomes (DESIGN.md §2).

A connection is "reused" at its first use in a later invocation than its last use: the
environment may have been frozen in between, long enough for the server, a NAT or a load
balancer to drop it. Only that first use does any work; every other use costs an
attribute read, two comparisons and a clock read.

Nothing here knows a driver: each connection carries its library's descriptor
(:class:`~lifecycle_probe.connections.library.ClientLibrary`: where its socket is, which
bytes end a session, which errors mean it is gone), and the driver modules call
:func:`tracked_call`, or :func:`note_use` / :func:`begin_reuse` / :func:`settle_reuse`
where a library's own flow needs them apart, and :meth:`ConnectionState.reconnected`.
"""

from __future__ import annotations

import _socket
import os
import select
import sys
import time
from time import time_ns as _time_ns

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.library import GONE_ERRNOS, UNKNOWN_LIBRARY, ClientLibrary
from lifecycle_probe.environment import current_environment
from lifecycle_probe.facts import invocation_in_flight
from lifecycle_probe.probe_threads import in_probe_work
from lifecycle_probe.records import COLD, DETECTED, FAILED, RISK, STALE_EVENT, LifecycleEvent

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from lifecycle_probe.environment import Environment

__all__ = [
    "DETECTED",
    "FAILED",
    "RISK",
    "STALE_EVENT",
    "ConnectionState",
    "Reuse",
    "begin_reuse",
    "configure",
    "first_use_call",
    "new_connection",
    "note_use",
    "peer_closed",
    "settle_reuse",
    "settle_use",
    "tracked_call",
]

# What the socket check saw at the first use after a freeze.
CHECK_DEAD = "dead"
CHECK_ALIVE = "alive"
# no socket to look at (already disconnected, or unknown), or idle under CHECK_MIN_IDLE_S
CHECK_SKIPPED = "skipped"

# _socket, not socket.py: this module is imported at INIT, where socket.py (and the enum
# module it loads) would cost more than all of connection tracking.
_PEEK_FLAGS = _socket.MSG_PEEK | getattr(_socket, "MSG_DONTWAIT", 0)

# Reusing a connection idle longer than this is a risk (Config.stale_idle_s), and whether
# reuses are reported at all (Config.connections): both are process-wide, put here by
# lifecycle_probe.installation, the one place that decides them (see :func:`configure`).
_stale_idle_s = 60.0
_stale_idle_ns = int(_stale_idle_s * 1e9)
_reporting = True
# Whether a probe of this process exports records (an exporter other than ``none``). A
# stale reuse is noted (event and log line) only then, or while a process sink takes
# records (``testing.capture_records``): ``exporter="none"`` writes nothing at all, not
# even the log lines. Connections are still watched meanwhile (a use costs the same), so
# that a probe with an exporter applied later judges their reuse from their first use.
_exporting = False

# The socket check looks for a goodbye the server sent while the environment sat frozen.
# Servers, NATs and load balancers drop connections after seconds to hours of idleness,
# so a connection idle for less than this is not looked at: the system call would cost
# back-to-back invocations a few µs on their first query, for nothing. A failing use is
# still reported ``failed``, and a driver's quiet replacement ``detected``; only the
# event's ``check`` says ``skipped``.
CHECK_MIN_IDLE_S = 1.0
_check_min_idle_ns = int(CHECK_MIN_IDLE_S * 1e9)


def configure(stale_idle_s: float, reporting: bool = True, exporting: bool = False) -> None:
    """Set the process-wide ``risk`` threshold, and whether stale reuses are reported.

    ``reporting=False`` is ``connections=False`` (or a disabled probe) decided after a
    client was already patched: its connections stay watched (a patch is not undone under
    a running function) but nothing is reported. ``exporting`` says whether a probe of the
    process has an exporter other than ``none``.
    """
    global _stale_idle_s, _stale_idle_ns, _reporting, _exporting
    _stale_idle_s = float(stale_idle_s)
    _stale_idle_ns = int(_stale_idle_s * 1e9)
    _reporting = bool(reporting)
    _exporting = bool(exporting)


def _noted_anywhere() -> bool:
    # A sink takes the event and the line: a probe's exporter, or a process sink (tests).
    if _exporting:
        return True
    sinks = sys.modules.get("lifecycle_probe.sinks")
    return bool(getattr(sinks, "process_sinks", None))


def stale_idle_s() -> float:
    """The current ``risk`` threshold in seconds."""
    return _stale_idle_s


def set_check_min_idle_s(seconds: float) -> None:
    """Idle time from which a reused connection's socket is checked (tests set 0)."""
    global _check_min_idle_ns
    _check_min_idle_ns = int(seconds * 1e9)


def created_in(seq: int) -> str:
    """``init`` for a connection made during INIT, else the invocation that made it."""
    return "init" if seq == 0 else f"invocation:{seq}"


class Reuse:
    """What the first use after a freeze found, until that use's outcome is known."""

    __slots__ = ("age_s", "check", "created_in", "error", "freezes", "idle_s", "reconnect_ns")

    def __init__(self, idle_s: float, age_s: float, created: str, freezes: int, check: str) -> None:
        self.idle_s = idle_s
        self.age_s = age_s
        self.created_in = created
        self.freezes = freezes
        self.check = check
        # Time spent reconnecting during this use (the driver replaced the dead socket).
        self.reconnect_ns = 0
        # A connection-level error seen during this use that the driver may still retry.
        self.error: BaseException | None = None


class ConnectionState:
    """The lifecycle of one client connection. No DSN, password or query is ever kept."""

    __slots__ = (
        "address",
        "busy",
        "client",
        "created_in",
        "created_ns",
        "db_system",
        "environment",
        "freezes",
        "last_reconnect_ns",
        "last_use_ns",
        "library",
        "port",
        "reuse",
        "seq",
        "uses",
    )

    def __init__(
        self,
        client: str,
        db_system: str | None,
        address: str | None,
        port: int | None,
        library: ClientLibrary = UNKNOWN_LIBRARY,
    ) -> None:
        environment = current_environment()
        now_ns = time.time_ns()
        self.client = client
        self.db_system = db_system
        # How to look at this connection's socket and judge its errors.
        self.library = library
        self.address = address
        self.port = port
        self.environment: Environment = environment
        self.seq = environment.seq
        self.created_in = created_in(environment.seq)
        self.created_ns = now_ns
        self.last_use_ns = now_ns
        self.uses = 0
        self.freezes = 0
        # What the driver's last replacement of the socket cost (see _short_idle_use).
        self.last_reconnect_ns = 0
        self.reuse: Reuse | None = None
        # True while a settling use runs: the driver's own nested calls (a reconnect's
        # set-up queries, ping's retry) are part of that use, not uses of their own.
        self.busy = False

    def same_invocation_use(self) -> bool:
        """Count a use with nothing to look at (the hot path): no invocation boundary since
        the last use and no reuse being settled. False: the use goes through
        :func:`tracked_call`'s slow path, uncounted. The caller sets ``last_use_ns`` when
        the use ends: idle time counts from then, so a long last query is no idle time."""
        if self.reuse is None and not self.busy:
            environment = current_environment()
            if environment.seq == self.seq and environment is self.environment:
                self.uses += 1
                return True
        return False

    def crossed_boundary(self) -> bool:
        """Whether an invocation boundary lies between the last use and now (cheap)."""
        environment = current_environment()
        return environment.seq != self.seq or environment is not self.environment

    def reconnected(self, cost_ns: int) -> None:
        """The driver replaced this connection's socket: a new server session begins."""
        environment = current_environment()
        reuse = self.reuse
        if reuse is not None:
            reuse.reconnect_ns += cost_ns
        self.last_reconnect_ns = cost_ns
        self.created_ns = time.time_ns()
        self.created_in = created_in(environment.seq)


def new_connection(
    library: ClientLibrary, address: str | None, port: int | None
) -> ConnectionState:
    """The state of a connection of ``library`` just made to ``address``:``port``."""
    return ConnectionState(library.name, library.db_system, address, port, library)


def begin_reuse(state: ConnectionState, fd: int | None) -> None:
    """First use after a freeze: measure idle time and look at the socket (no traffic)."""
    environment = current_environment()
    if state.reuse is not None:
        # The previous reuse never reached an outcome (its use did not go through a
        # settling call): give it one now rather than lose it.
        settle_reuse(state)
    now_ns = time.time_ns()
    _cross_boundaries(state, environment)
    idle_ns = now_ns - state.last_use_ns
    if fd is None or fd < 0 or idle_ns < _check_min_idle_ns:
        check = CHECK_SKIPPED
    else:
        check = peer_closed(fd, state.library.closing)
    state.reuse = Reuse(
        idle_ns / 1e9,
        (now_ns - state.created_ns) / 1e9,
        state.created_in,
        state.freezes,
        check,
    )


# AWS_LAMBDA_INITIALIZATION_TYPE of a Lambda Managed Instances worker.
MANAGED_INSTANCES = "lambda-managed-instances"


def freezes_between(last: Environment | None, last_seq: int, environment: Environment) -> int:
    """The freezes between a use in invocation ``last_seq`` of ``last`` (0: at INIT) and now.

    One per boundary between invocations. From INIT to the first event of an environment
    its caller waited for (a ``cold`` start) there is none: the runtime went straight on;
    ahead-of-demand INITs and a snapshot's restore do sit frozen before their first event.
    """
    if environment.init_type == MANAGED_INSTANCES:
        return 0  # Lambda Managed Instances never freeze an environment
    if environment is not last or environment.seq <= last_seq:
        return 1  # a new environment (fork, restore, tests): at least one boundary
    crossed = environment.seq - last_seq
    if last_seq == 0 and environment.first_start == COLD:
        crossed -= 1
    return crossed


def _cross_boundaries(state: ConnectionState, environment: Environment) -> None:
    """Move a connection's state over the invocation boundaries since its last use."""
    state.freezes += freezes_between(state.environment, state.seq, environment)
    state.environment = environment
    state.seq = environment.seq


def note_use(state: ConnectionState, owner: Any) -> None:
    """Count one use of ``owner`` (the driver's connection object); at the first use after
    an invocation boundary, begin a reuse."""
    try:
        if state.reuse is None and not state.busy and state.crossed_boundary():
            begin_reuse(state, state.library.fd(owner))
        state.uses += 1
        state.last_use_ns = time.time_ns()
    except Exception as exc:
        report_failure(f"{state.client} connection tracking", exc)


def settle_reuse(state: ConnectionState, lost: BaseException | None = None) -> None:
    """The first use after a freeze is over: note its outcome, if it has one worth noting.

    ``lost`` is the error that use ended with when it means the connection is gone (the
    caller judged it with its library's :meth:`ClientLibrary.is_lost`); any other error
    is a reply (a bad query) and counts as the reuse having worked.
    """
    try:
        reuse = state.reuse
        state.reuse = None
        if reuse is None:
            return
        if lost is not None:
            outcome = FAILED
        elif reuse.check == CHECK_DEAD or reuse.reconnect_ns:
            outcome = DETECTED
        elif reuse.idle_s > _stale_idle_s:
            # It worked: a reply, even an error reply (a bad query), came back.
            outcome = RISK
        else:
            return
        _note(state, reuse, outcome, lost)
    except Exception as failure:
        report_failure(f"{state.client} connection tracking", failure)


def settle_use(state: ConnectionState, owner: Any, exc: BaseException | None) -> None:
    """:func:`settle_reuse` after a use of ``owner`` that ended with ``exc`` (or None)."""
    settle_reuse(state, exc if exc is not None and state.library.is_lost(owner, exc) else None)


def _note(state: ConnectionState, reuse: Reuse, outcome: str, exc: BaseException | None) -> None:
    if not _reporting:
        return  # connections=False, decided after the client was patched
    if not _noted_anywhere():
        return  # exporter="none": nothing written, no event left to pile up
    if in_probe_work():
        return  # the probe's own connection (the exporter's, to the collector)
    # An HTTP connection has no db.system: its server.address and port say what it is.
    attributes: list[tuple[str, str | int | float | bool]] = []
    if state.db_system is not None:
        attributes.append(("db.system", state.db_system))
    if state.address is not None:
        attributes.append(("server.address", state.address))
    if state.port is not None:
        attributes.append(("server.port", state.port))
    attributes += [
        ("lifecycle.connection.idle_s", round(reuse.idle_s, 6)),
        ("lifecycle.connection.age_s", round(reuse.age_s, 6)),
        ("lifecycle.connection.created_in", reuse.created_in),
        ("lifecycle.connection.outcome", outcome),
        ("lifecycle.connection.freezes", reuse.freezes),
        ("lifecycle.connection.uses", state.uses),
        ("lifecycle.connection.check", reuse.check),
    ]
    if reuse.reconnect_ns:
        attributes.append(("lifecycle.connection.reconnect_s", round(reuse.reconnect_ns / 1e9, 6)))
    if exc is not None and outcome == FAILED:
        # The type only: an error's message may quote the DSN or the query.
        attributes.append(("error.type", type(exc).__qualname__))
    from lifecycle_probe.loglines import STALE_CONNECTION, WARNING, write_line

    event_ns = time.time_ns()
    environment = current_environment()
    environment.add_event(
        LifecycleEvent(name=STALE_EVENT, time_ns=event_ns, attributes=tuple(attributes))
    )
    where = state.address if state.port is None else f"{state.address}:{state.port}"
    if outcome == FAILED:
        what = "failed on reuse"
    elif reuse.reconnect_ns:
        cost_ms = reuse.reconnect_ns / 1e6
        what = f"was found dead on reuse and replaced (reconnecting took {cost_ms:.1f} ms)"
    elif outcome == DETECTED:
        what = "was found dead on reuse"
    else:
        what = "was reused and worked"
    # Lambda Managed Instances never freeze: no freeze count to tell there.
    frozen = (
        ""
        if environment.init_type == MANAGED_INSTANCES
        else f", lived through {reuse.freezes} freezes"
    )
    message = (
        f"lifecycle_probe: stale connection ({outcome}): {state.client} connection to "
        f"{where} {what} after {reuse.idle_s:.1f} s idle (created in {reuse.created_in}{frozen})"
    )
    # The same facts as the span event, with names a log query can use as they are.
    fields = {
        name.replace("lifecycle.connection.", "connection_").replace(".", "_"): value
        for name, value in attributes
    }
    fields["connection_client"] = state.client
    # The invocation the use belongs to: its facts and ARN, for a log query to join on.
    invocation = invocation_in_flight()
    write_line(
        STALE_CONNECTION,
        WARNING,
        message,
        fields,
        facts=None if invocation is None else invocation.facts(),
        function=environment.function,
        arn=None if invocation is None else invocation.invoked_function_arn(),
        xray_header=os.environ.get("_X_AMZN_TRACE_ID"),
        time_ns=event_ns,
    )


def peer_closed(fd: int, closing: Callable[[bytes], bool]) -> str:
    """Look at a connection's socket without sending or consuming a byte.

    An idle connection's socket is readable only when the peer closed it (EOF), reset it,
    or said something unsolicited; ``closing`` decides whether the bytes waiting are the
    server's parting words (PostgreSQL's FATAL ErrorResponse, MySQL's error packet).
    """
    events = _waiting(fd)
    if not events:
        return CHECK_ALIVE
    if events & _PEER_SENT_FIN:
        # The peer has closed its side: whatever waits before its FIN is its parting words,
        # also where no byte tells them from data (TLS 1.3 sends its alert, like a FATAL,
        # inside an application-data record).
        return CHECK_DEAD
    # A socket object over the descriptor, detached before it can close it: the driver
    # owns the descriptor.
    sock = _socket.socket(fileno=fd)
    try:
        data = sock.recv(512, _PEEK_FLAGS)
    except (BlockingIOError, InterruptedError):
        return CHECK_ALIVE
    except OSError as exc:
        return CHECK_DEAD if exc.errno in GONE_ERRNOS else CHECK_SKIPPED
    finally:
        sock.detach()
    if not data or closing(data):
        return CHECK_DEAD
    return CHECK_ALIVE


# poll's "the peer sent its FIN" (Linux; 0 where the platform has no such flag).
_PEER_SENT_FIN: int = getattr(select, "POLLRDHUP", 0)


def _waiting(fd: int) -> int:
    """What the socket has for us now, as poll's event bits (0: nothing)."""
    poll = getattr(select, "poll", None)
    if poll is not None:
        poller = poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP | _PEER_SENT_FIN)
        ready = poller.poll(0)
        return ready[0][1] if ready else 0
    readable, _, _ = select.select([fd], [], [], 0)
    return select.POLLIN if readable else 0


def tracked_call(
    state: ConnectionState,
    wrapped: Callable[..., object],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    owner: Any,
) -> object:
    """Run one network operation ``wrapped(*args, **kwargs)`` of ``owner`` (the driver's
    connection), settling a reuse if this use began one.

    The operation's result or exception passes through untouched (the same object).
    """
    if state.same_invocation_use():
        try:
            return wrapped(*args, **kwargs)
        finally:
            state.last_use_ns = _time_ns()
    return first_use_call(state, wrapped, args, kwargs, owner)


def first_use_call(
    state: ConnectionState,
    wrapped: Callable[..., object],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    owner: Any,
) -> object:
    """:func:`tracked_call` once :meth:`ConnectionState.same_invocation_use` said no: the
    first use after a boundary (or a use nested in one that settles)."""
    if state.reuse is None and not state.busy:
        now_ns = _time_ns()
        idle_ns = now_ns - state.last_use_ns
        if idle_ns < _check_min_idle_ns and idle_ns < _stale_idle_ns:
            return _short_idle_use(state, wrapped, args, kwargs, owner)
    note_use(state, owner)
    try:
        if state.reuse is None or state.busy:
            return wrapped(*args, **kwargs)
        state.busy = True
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            state.busy = False
            settle_use(state, owner, exc)
            raise
        finally:
            state.busy = False  # whatever happens, never left set: it would stop all tracking
        settle_reuse(state)
        return result
    finally:
        state.last_use_ns = _time_ns()


def _short_idle_use(
    state: ConnectionState,
    wrapped: Callable[..., object],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    owner: Any,
) -> object:
    """The first use after a boundary of a connection idle for less than both the socket
    check's and the risk's thresholds (back-to-back invocations): nothing to look at
    before it, and nothing to report if it works on the same session. Its reuse record
    is built only if the use fails or the driver replaced the session during it (PyMySQL's
    ``ping(reconnect=True)``): every back-to-back first use would otherwise pay for a
    record it almost never needs, so what the record would say is kept in locals."""
    started_ns = _time_ns()
    idle_ns = started_ns - state.last_use_ns
    # The session as it was before the use.
    created_ns, created_in = state.created_ns, state.created_in
    try:
        _cross_boundaries(state, current_environment())
        state.uses += 1
        state.last_use_ns = started_ns
    except Exception as exc:
        report_failure(f"{state.client} connection tracking", exc)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        if _late_reuse(state, idle_ns, started_ns, created_ns, created_in):
            settle_use(state, owner, exc)
        raise
    finally:
        state.last_use_ns = _time_ns()
    if state.created_ns != created_ns and _late_reuse(
        state, idle_ns, started_ns, created_ns, created_in
    ):
        settle_reuse(state)
    return result


def _late_reuse(
    state: ConnectionState, idle_ns: int, started_ns: int, created_ns: int, created_in: str
) -> bool:
    """Give a short-idle use its reuse record after the fact, from what the session was
    before it (``created_ns``, ``created_in``); False if that failed."""
    try:
        reuse = Reuse(
            idle_ns / 1e9,
            (started_ns - created_ns) / 1e9,
            created_in,
            state.freezes,
            CHECK_SKIPPED,
        )
        if state.created_ns != created_ns:
            # The driver replaced the session during the use.
            reuse.reconnect_ns = state.last_reconnect_ns
        state.reuse = reuse
    except Exception as failure:
        report_failure(f"{state.client} connection tracking", failure)
        return False
    return True
