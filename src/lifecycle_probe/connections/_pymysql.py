"""PyMySQL: its pure-Python ``Connection`` class is patched in place (no proxy needed).

Each connection's state lives in its instance ``__dict__``. The operations that talk to
the server are the public ones a cursor or the user calls (``query`` carries every
``cursor.execute``); ``ping(reconnect=True)``, the usual PyMySQL guard, reconnects through
``connect``, whose cost is what a ``detected`` reuse reports.
"""

from __future__ import annotations

import time

import wrapt  # type: ignore[import-untyped]  # wrapt 1.17 ships no type information

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.library import ClientLibrary, is_socket_gone
from lifecycle_probe.connections.tracking import new_connection, tracked_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = ["library", "patch"]

CLIENT = "pymysql"
DB_SYSTEM = "mysql"
STATE = "_lifecycle_probe_connection"

_OPERATIONS = ("query", "ping", "commit", "rollback", "begin", "select_db")

# Client and server error codes that mean the session is gone: CR_SERVER_GONE_ERROR,
# CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED, ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED
# (MariaDB), ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+ wait_timeout).
_GONE_CODES = frozenset({2006, 2013, 2055, 1053, 1927, 4031})


def _closing(data: bytes) -> bool:
    # A MySQL server sends an idle session nothing unasked but its last error packet
    # (or, encrypted, a TLS alert) before it closes the socket.
    return True


def _fd_of(connection: Any) -> int | None:
    sock = connection._sock
    return None if sock is None else int(sock.fileno())


def _closed(connection: Any) -> bool:
    return not connection.open


def _server_of(connection: Any) -> tuple[str | None, int | None]:
    path = connection.unix_socket
    port = connection.port
    return path or connection.host, None if path or port is None else int(port)


def library(module: ModuleType) -> ClientLibrary:
    """PyMySQL's descriptor (``module`` is pymysql)."""
    operational = module.err.OperationalError
    interface = module.err.InterfaceError

    def lost(connection: Any, exc: BaseException) -> bool:
        if isinstance(exc, interface):
            return True
        if isinstance(exc, operational):
            return bool(exc.args) and exc.args[0] in _GONE_CODES
        return is_socket_gone(exc)

    return ClientLibrary(
        CLIENT,
        DB_SYSTEM,
        socket_of=_fd_of,
        closing=_closing,
        lost=lost,
        closed=_closed,
        server_of=_server_of,
    )


def patch(module: ModuleType) -> None:
    """Track every ``pymysql.connections.Connection`` (once per class)."""
    cls = module.connections.Connection
    if cls.__dict__.get("_lifecycle_probe_tracked", False):
        return
    described = library(module)

    def connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        started_ns = time.perf_counter_ns()
        result = wrapped(*args, **kwargs)
        try:
            cost_ns = time.perf_counter_ns() - started_ns
            state = instance.__dict__.get(STATE)
            if state is None:
                instance.__dict__[STATE] = new_connection(described, *_server_of(instance))
            else:
                state.reconnected(cost_ns)
        except Exception as exc:
            report_failure("pymysql connection tracking", exc)
        return result

    def operation(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = instance.__dict__.get(STATE)
        if state is None:
            return wrapped(*args, **kwargs)
        return tracked_call(state, wrapped, args, kwargs, instance)

    wrapt.wrap_function_wrapper(cls, "connect", connect)
    for name in _OPERATIONS:
        if hasattr(cls, name):
            wrapt.wrap_function_wrapper(cls, name, operation)
    cls._lifecycle_probe_tracked = True
