"""psycopg 3: its pure-Python ``Connection`` class is patched in place (no proxy needed).

``isinstance``, context managers and cursors are psycopg's own, untouched. Every
operation that talks to the server (``Cursor.execute``/``executemany``/``stream``/``copy``,
server-side cursor fetches, ``commit``, ``rollback``, transactions, pipelines, ``notifies``)
goes through ``Connection.wait``, so that one method carries the tracking. The state is
made by ``Connection.__init__``, which both ``psycopg.connect`` (bound at psycopg's
import, so not patchable itself) and ``psycopg.Connection.connect`` reach. psycopg 3
never reconnects by itself: a dead connection fails (``broken``), or a pool replaces it.

``AsyncConnection`` (whose ``wait`` is a coroutine) is not tracked.
"""

from __future__ import annotations

import functools

import wrapt  # type: ignore[import-untyped]  # wrapt 1.17 ships no type information

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections._psycopg2 import postgres_library, postgres_server
from lifecycle_probe.connections.library import is_socket_gone
from lifecycle_probe.connections.tracking import new_connection, tracked_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

    from lifecycle_probe.connections.library import ClientLibrary

__all__ = ["STATE", "library", "patch"]

CLIENT = "psycopg"
STATE = "_lifecycle_probe_connection"


def _fileno(connection: Any) -> int:
    # Raises on a connection already lost: tracking then skips the socket check.
    return int(connection.pgconn.socket)


def _closed(connection: Any) -> bool:
    return bool(connection.closed or connection.broken)


def library(module: ModuleType) -> ClientLibrary:
    """psycopg 3's descriptor (``module`` is psycopg); the wire protocol is psycopg2's."""
    errors = (module.OperationalError, module.InterfaceError)

    def lost(connection: Any, exc: BaseException) -> bool:
        if isinstance(exc, errors):
            # OperationalError also covers serialisation failures, cancelled queries and
            # timeouts: only a connection that broke (not one the user closed) counts.
            return bool(connection.broken)
        return is_socket_gone(exc)

    return postgres_library(CLIENT, socket_of=_fileno, lost=lost, closed=_closed)


def patch(module: ModuleType) -> None:
    """Track every ``psycopg.Connection`` made from now on (once per class)."""
    cls = module.Connection
    if cls.__dict__.get("_lifecycle_probe_tracked", False):
        return
    described = library(module)

    def init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        try:
            address, port = postgres_server(instance)
            instance.__dict__[STATE] = new_connection(described, address, port)
        except Exception as exc:
            report_failure("psycopg connection tracking", exc)

    original_wait = cls.wait

    # A plain function, not a wrapt wrapper: ``wait`` runs once per query (once per row
    # of ``Cursor.stream``), and wrapt's per-call binding costs ~0.8 us there against
    # ~0.3 us for an ordinary method.
    @functools.wraps(original_wait)
    def wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = self.__dict__.get(STATE)
        if state is None:
            return original_wait(self, *args, **kwargs)
        return tracked_call(state, original_wait.__get__(self), args, kwargs, self)

    wrapt.wrap_function_wrapper(cls, "__init__", init)
    cls.wait = wait
    cls._lifecycle_probe_tracked = True
