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
import weakref

import wrapt  # type: ignore[import-untyped]  # wrapt 1.17 ships no type information

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.tracking import (
    ConnectionState,
    is_socket_gone,
    tracked_call,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

CLIENT = "psycopg"
DB_SYSTEM = "postgresql"
STATE = "_lifecycle_probe_connection"


class _State(ConnectionState):
    """A connection's lifecycle, with the test of its errors (it knows the connection)."""

    __slots__ = ("is_connection_error",)

    def __init__(
        self,
        address: str | None,
        port: int | None,
        is_connection_error: Callable[[BaseException], bool],
    ) -> None:
        super().__init__(CLIENT, DB_SYSTEM, address, port)
        self.is_connection_error = is_connection_error


def _closing(data: bytes) -> bool:
    # The same wire protocol as psycopg2 (see _psycopg2._closing): an idle session's only
    # unasked message that ends it is a FATAL ErrorResponse ('E'); 0x15 is a TLS alert.
    return data[:1] in (b"E", b"\x15")


def _fileno(connection: Any) -> int:
    # Raises on a connection already lost: tracking then skips the socket check.
    return int(connection.pgconn.socket)


def _make_is_connection_error(module: ModuleType) -> Any:
    errors = (module.OperationalError, module.InterfaceError)

    def is_connection_error_of(connection: Any) -> Callable[[BaseException], bool]:
        # A weak reference: the state lives in the connection's __dict__, and a cycle
        # would delay psycopg's own "deleted while still open" ResourceWarning.
        ref = weakref.ref(connection)

        def is_connection_error(exc: BaseException) -> bool:
            if isinstance(exc, errors):
                # OperationalError also covers serialisation failures, cancelled queries
                # and timeouts: only a connection that broke (not one the user closed)
                # counts.
                raw = ref()
                return raw is not None and bool(raw.broken)
            return is_socket_gone(exc)

        return is_connection_error

    return is_connection_error_of


def _server_of(connection: Any) -> tuple[str | None, int | None]:
    info = connection.info
    port = info.port
    return info.host or None, None if port is None else int(port)


def patch(module: ModuleType) -> None:
    """Track every ``psycopg.Connection`` made from now on (once per class)."""
    cls = module.Connection
    if cls.__dict__.get("_lifecycle_probe_tracked", False):
        return
    is_connection_error_of = _make_is_connection_error(module)

    def init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        try:
            address, port = _server_of(instance)
            instance.__dict__[STATE] = _State(address, port, is_connection_error_of(instance))
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
        return tracked_call(
            state,
            original_wait.__get__(self),
            args,
            kwargs,
            self,
            _fileno,
            _closing,
            state.is_connection_error,
        )

    wrapt.wrap_function_wrapper(cls, "__init__", init)
    cls.wait = wait
    cls._lifecycle_probe_tracked = True
