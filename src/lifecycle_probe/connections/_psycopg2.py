"""psycopg2: connections and cursors behind transparent proxies.

psycopg2's connection and cursor are C types whose methods cannot be patched, so
``psycopg2.connect`` returns a ``wrapt.ObjectProxy``: ``isinstance`` checks, attributes,
context managers and iteration all reach the real object. C functions that demand the
real type (``psycopg2.extensions.register_type(..., conn)``, ``extras.register_uuid``)
take ``conn.__wrapped__``.
"""

from __future__ import annotations

import wrapt  # type: ignore[import-untyped]  # wrapt 1.17 ships no type information

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.tracking import (
    ConnectionState,
    is_socket_gone,
    tracked_call,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

CLIENT = "psycopg2"
DB_SYSTEM = "postgresql"


def _closing(data: bytes) -> bool:
    # The only message a server sends an idle session unasked that ends it is an
    # ErrorResponse ('E', always FATAL there: idle_session_timeout, pg_terminate_backend,
    # shutdown). NOTIFY ('A'), notices ('N') and parameter changes ('S') keep it alive.
    # 0x15 is a TLS alert record (close_notify) on an encrypted connection.
    return data[:1] in (b"E", b"\x15")


def _fileno(connection: Any) -> int:
    return int(connection.fileno())


def _make_is_connection_error(module: ModuleType) -> Any:
    operational = module.OperationalError
    interface = module.InterfaceError

    def is_connection_error_of(raw: Any) -> Any:
        def is_connection_error(exc: BaseException) -> bool:
            if isinstance(exc, (operational, interface)):
                # OperationalError also covers serialisation failures and cancelled
                # queries: only a broken connection (closed == 2) counts.
                return bool(getattr(raw, "closed", 0) == 2)
            return is_socket_gone(exc)

        return is_connection_error

    return is_connection_error_of


class TrackedCursor(wrapt.ObjectProxy):  # type: ignore[misc]
    """A psycopg2 cursor whose server operations are watched for stale reuse."""

    def __init__(self, cursor: Any, connection: TrackedConnection) -> None:
        super().__init__(cursor)
        self._self_connection = connection

    def __enter__(self) -> TrackedCursor:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self.__wrapped__.__exit__(*exc_info)

    def _self_operate(self, name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> Any:
        connection = self._self_connection
        return tracked_call(
            connection._self_state,
            getattr(self.__wrapped__, name),
            args,
            kwargs,
            connection.__wrapped__,
            _fileno,
            _closing,
            connection._self_is_connection_error,
        )

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_operate("execute", args, kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_operate("executemany", args, kwargs)

    def callproc(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_operate("callproc", args, kwargs)

    def copy_expert(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_operate("copy_expert", args, kwargs)

    def copy_from(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_operate("copy_from", args, kwargs)

    def copy_to(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_operate("copy_to", args, kwargs)


class TrackedConnection(wrapt.ObjectProxy):  # type: ignore[misc]
    """A psycopg2 connection with its lifecycle state; its cursors are tracked too."""

    def __init__(self, connection: Any, state: ConnectionState, is_connection_error: Any) -> None:
        super().__init__(connection)
        self._self_state = state
        self._self_is_connection_error = is_connection_error

    def __enter__(self) -> TrackedConnection:
        # The real __enter__ returns the bare connection; `with connect() as conn` must
        # keep handing out the tracked one.
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self.__wrapped__.__exit__(*exc_info)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cursor = self.__wrapped__.cursor(*args, **kwargs)
        try:
            return TrackedCursor(cursor, self)
        except Exception as exc:
            report_failure("psycopg2 cursor tracking", exc)
            return cursor


def _server_of(connection: Any) -> tuple[str | None, int | None]:
    info = connection.info
    port = info.port
    return info.host, None if port is None else int(port)


def patch(module: ModuleType) -> None:
    """Make ``psycopg2.connect`` hand out tracked connections (once per module object)."""
    if getattr(module, "_lifecycle_probe_tracked", False):
        return
    is_connection_error_of = _make_is_connection_error(module)

    def connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        connection = wrapped(*args, **kwargs)
        try:
            address, port = _server_of(connection)
            state = ConnectionState(CLIENT, DB_SYSTEM, address, port)
            return TrackedConnection(connection, state, is_connection_error_of(connection))
        except Exception as exc:
            report_failure("psycopg2 connection tracking", exc)
            return connection

    wrapt.wrap_function_wrapper(module, "connect", connect)
    setattr(module, "_lifecycle_probe_tracked", True)  # noqa: B010 (a module has no such attribute to type)
