"""The safe-reuse helper: the ``get_connection()`` pattern of Lambda functions, done right.

A function keeps a connection across invocations to save the connect on warm starts. After
a freeze the server (or a NAT, or a load balancer) may have dropped it. ``reusable``
validates the cached connection at its first use in each invocation, without sending a
byte (the client's own closed flags, then the socket check of connection tracking, with
the descriptor tracking gives the client library: ``library.py``), and
reconnects when it is dead, reporting that as a ``detected`` stale connection with what
reconnecting cost. Later uses in the same invocation cost one comparison.

    get_connection = reusable(lambda: psycopg2.connect(DSN))

    @probe
    def handler(event, context):
        with get_connection().cursor() as cursor:
            ...
"""

from __future__ import annotations

import _thread
import os
import sys
import time
from typing import Generic, TypeVar

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.library import ClientLibrary
from lifecycle_probe.connections.tracking import (
    CHECK_DEAD,
    DETECTED,
    Reuse,
    _note,
    created_in,
    freezes_between,
    new_connection,
    peer_closed,
)
from lifecycle_probe.environment import current_environment

# Only user code that asks for the helper imports this module (never the probe at INIT),
# so typing is fine here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

    from lifecycle_probe.environment import Environment

__all__ = ["is_alive", "reusable"]

C = TypeVar("C")

# The client libraries whose driver module (lifecycle_probe.connections._<name>, the one
# connection tracking patches them with) describes them: ``reusable`` judges their
# connections with the very descriptor tracking gives them.
_DESCRIBED = frozenset({"psycopg2", "psycopg", "pymysql", "redis", "urllib3"})
# name -> (the library's module, its descriptor); made again for a new module object.
_libraries: dict[str, tuple[ModuleType, ClientLibrary]] = {}


def _fileno(connection: Any) -> int:
    return int(connection.fileno())


def _library_of(raw: Any) -> ClientLibrary:
    """The descriptor of ``raw``'s client library (that of the first class in its MRO from
    a known library: a user's subclass of a driver's connection counts), else one that
    looks at anything's ``fileno()`` and takes no bytes for parting words."""
    for cls in type(raw).__mro__:
        name = cls.__module__.split(".")[0]
        module = sys.modules.get(name)
        if name not in _DESCRIBED or module is None:
            continue
        known = _libraries.get(name)
        if known is not None and known[0] is module:
            return known[1]
        driver = f"lifecycle_probe.connections._{name}"
        __import__(driver)
        library: ClientLibrary = sys.modules[driver].library(module)
        _libraries[name] = (module, library)
        return library
    return ClientLibrary(type(raw).__module__.split(".")[0], "other", socket_of=_fileno)


def is_alive(connection: Any) -> bool:
    """Whether a cached connection can be used: closed flags, then a zero-traffic peek."""
    raw = getattr(connection, "__wrapped__", connection)  # a tracked proxy's connection
    library = _library_of(raw)
    if library.closed is not None and library.closed(raw):
        return False
    fd = library.fd(raw)
    if fd is None:
        # A connection with closed flags (psycopg, PyMySQL) and no socket is gone; anything
        # else without one (a redis-py client, a urllib3 pool: they replace their dead
        # sockets themselves) cannot be looked at.
        return library.closed is None
    return peer_closed(fd, library.closing) != CHECK_DEAD


class reusable(Generic[C]):
    """A connection kept across invocations, checked once per invocation, remade if dead.

    ``connect`` makes a connection; ``validate(connection) -> bool`` replaces the
    built-in check (psycopg2, psycopg, PyMySQL and redis-py are known; anything with a
    ``fileno()`` gets the socket check). Calling the object returns a live connection.
    Thread-safe; never lets a failing check or close hide the connection you asked for.
    """

    def __init__(
        self,
        connect: Callable[[], C],
        *,
        validate: Callable[[C], bool] | None = None,
    ) -> None:
        self._connect = connect
        self._validate = validate
        self._lock = _thread.allocate_lock()
        self._pid = os.getpid()
        self._connection: C | None = None
        # (environment, invocation seq) of the last check: the environment itself, not its
        # id, which a new environment object could reuse.
        self._checked: tuple[Environment, int] | None = None
        self._created_ns = 0
        self._created_seq = 0
        self._last_use_ns = 0
        self._freezes = 0
        # Hand-outs of the current connection: the ``uses`` of its stale report.
        self._uses = 0
        self.reconnects = 0

    def __call__(self) -> C:
        if self._pid != os.getpid():
            # A forked child: the parent may have held the lock (in a connect) at the
            # fork, and its connection's socket is shared with the parent. Start over.
            self._pid = os.getpid()
            self._lock = _thread.allocate_lock()
            self._connection = None
            self._checked = None
        environment = current_environment()
        mark = (environment, environment.seq)
        with self._lock:
            connection = self._connection
            checked = self._checked
            if connection is not None and checked == mark:
                self._last_use_ns = time.time_ns()
                self._uses += 1
                return connection
            if connection is not None:
                # The same count as connection tracking gives for the same history.
                last, last_seq = checked if checked is not None else (None, 0)
                self._freezes += freezes_between(last, last_seq, environment)
                if not self._alive(connection):
                    return self._replace(connection, mark)
            else:
                connection = self._new()
            self._connection = connection
            self._checked = mark
            self._last_use_ns = time.time_ns()
            self._uses += 1
            return connection

    def _alive(self, connection: C) -> bool:
        try:
            if self._validate is not None:
                return bool(self._validate(connection))
            return is_alive(connection)
        except Exception as exc:
            # A check that cannot tell must not cost the function its connection.
            report_failure("reusable connection check", exc)
            return True

    def _new(self) -> C:
        connection = self._connect()
        self._created_ns = time.time_ns()
        self._created_seq = current_environment().seq
        self._freezes = 0
        self._uses = 0
        return connection

    def _replace(self, dead: C, mark: tuple[Environment, int]) -> C:
        idle_s = (time.time_ns() - self._last_use_ns) / 1e9
        age_s = (time.time_ns() - self._created_ns) / 1e9
        # The dead connection's figures; this hand-out is its (failed) reuse.
        created_seq, freezes, uses = self._created_seq, self._freezes, self._uses + 1
        close = getattr(dead, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                pass
        started = time.perf_counter_ns()
        connection = self._new()  # a failing connect is the user's error: it propagates
        cost_ns = time.perf_counter_ns() - started
        self._connection = connection
        self._checked = mark
        self._last_use_ns = time.time_ns()
        self._uses = 1
        self.reconnects += 1
        try:
            raw = getattr(connection, "__wrapped__", connection)
            library = _library_of(raw)
            state = new_connection(library, *library.server(raw))
            state.uses = uses
            reuse = Reuse(idle_s, age_s, created_in(created_seq), freezes, CHECK_DEAD)
            reuse.reconnect_ns = cost_ns
            _note(state, reuse, DETECTED, None)
        except Exception as exc:
            report_failure("reusable connection report", exc)
        return connection
