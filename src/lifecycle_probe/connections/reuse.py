"""The safe-reuse helper: the ``get_connection()`` pattern of Lambda functions, done right.

A function keeps a connection across invocations to save the connect on warm starts. After
a freeze the server (or a NAT, or a load balancer) may have dropped it. ``reusable``
validates the cached connection at its first use in each invocation, without sending a
byte (the socket check of connection tracking, plus the client's own closed flags), and
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
import time
from typing import Generic, TypeVar

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.tracking import (
    CHECK_DEAD,
    DETECTED,
    ConnectionState,
    Reuse,
    _note,
    freezes_between,
    peer_closed,
)
from lifecycle_probe.environment import current_environment

# Only user code that asks for the helper imports this module (never the probe at INIT),
# so typing is fine here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from lifecycle_probe.environment import Environment

__all__ = ["is_alive", "reusable"]

C = TypeVar("C")


def _never_closing(data: bytes) -> bool:
    # Unknown protocol: bytes waiting on an idle socket say nothing about its death.
    return False


def _pg_closing(data: bytes) -> bool:
    return data[:1] == b"E"  # PostgreSQL ErrorResponse: the server's FATAL parting words


def _mysql_closing(data: bytes) -> bool:
    return bool(data)  # MySQL sends nothing unsolicited but its error packet


def _describe(connection: Any) -> tuple[str, str, int | None, str | None, int | None]:
    """(client, db.system, socket fd, address, port) of a known client's connection."""
    raw = getattr(connection, "__wrapped__", connection)  # a tracked proxy's connection
    module = type(raw).__module__.split(".")[0]
    fd: int | None = None
    address: str | None = None
    port: int | None = None
    if module in ("psycopg2", "psycopg"):
        fd = raw.fileno() if not raw.closed else None
        info = getattr(raw, "info", None)
        address = getattr(info, "host", None)
        port_text = getattr(info, "port", None)
        port = int(port_text) if port_text else None
        return module, "postgresql", fd, address, port
    if module == "pymysql":
        sock = getattr(raw, "_sock", None)
        fd = sock.fileno() if sock is not None else None
        return module, "mysql", fd, getattr(raw, "host", None), getattr(raw, "port", None)
    fileno = getattr(raw, "fileno", None)
    if callable(fileno):
        try:
            fd = int(fileno())
        except Exception:
            fd = None
    return module, "other", fd, None, None


def is_alive(connection: Any) -> bool:
    """Whether a cached connection can be used: closed flags, then a zero-traffic peek."""
    raw = getattr(connection, "__wrapped__", connection)
    module = type(raw).__module__.split(".")[0]
    if module == "redis":
        return True  # redis-py's pool replaces dead sockets by itself
    if module in ("psycopg2", "psycopg") and (raw.closed or getattr(raw, "broken", False)):
        return False
    if module == "pymysql" and not raw.open:
        return False
    _, db_system, fd, _, _ = _describe(connection)
    if fd is None or fd < 0:
        return module not in ("psycopg2", "psycopg", "pymysql")
    closing = {"postgresql": _pg_closing, "mysql": _mysql_closing}.get(db_system, _never_closing)
    return peer_closed(fd, closing) != CHECK_DEAD


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
            client, db_system, _, address, port = _describe(connection)
            state = ConnectionState(client, db_system, address, port)
            state.uses = uses
            reuse = Reuse(
                idle_s,
                age_s,
                "init" if created_seq == 0 else f"invocation:{created_seq}",
                freezes,
                CHECK_DEAD,
            )
            reuse.reconnect_ns = cost_ns
            _note(state, reuse, DETECTED, None)
        except Exception as exc:
            report_failure("reusable connection report", exc)
        return connection
