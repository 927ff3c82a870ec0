"""psycopg2: connections and cursors as subclasses of the classes the user asked for.

psycopg2's connection and cursor are C types whose methods cannot be patched, and
psycopg2's C functions refuse anything that is not really one of them (a proxy breaks
``register_default_jsonb(conn)``, ``sql.Identifier(...).as_string(conn)``). Python
subclasses pass those checks: ``connect`` makes the connection from a tracked subclass of
the ``connection_factory`` asked for, whose cursors come from tracked subclasses of the
``cursor_factory`` asked for.
"""

from __future__ import annotations

from time import time_ns as _time_ns

import wrapt  # type: ignore[import-untyped]  # wrapt 1.17 ships no type information

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.library import ClientLibrary, is_socket_gone, tls_alert_waiting
from lifecycle_probe.connections.tracking import first_use_call, new_connection

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

__all__ = ["library", "patch", "postgres_library", "postgres_server"]

CLIENT = "psycopg2"
DB_SYSTEM = "postgresql"


def postgres_closing(data: bytes) -> bool:
    """Whether bytes waiting on an idle PostgreSQL session are the server ending it.

    The only message a server sends an idle session unasked that ends it is an
    ErrorResponse ('E', always FATAL there: idle_session_timeout, pg_terminate_backend,
    shutdown). NOTIFY ('A'), notices ('N') and parameter changes ('S') keep it alive. On
    an encrypted session (TLS 1.2) the FATAL message is an application data record and the
    server's close_notify an alert record (0x15) after it.
    """
    return data[:1] == b"E" or tls_alert_waiting(data)


def postgres_server(connection: Any) -> tuple[str | None, int | None]:
    """(host, port) of a psycopg2 or psycopg 3 connection, from its ``info``."""
    info = connection.info
    port = info.port
    return info.host or None, None if port is None else int(port)


def postgres_library(
    client: str,
    *,
    socket_of: Callable[[Any], int | None],
    lost: Callable[[Any, BaseException], bool],
    closed: Callable[[Any], bool],
) -> ClientLibrary:
    """A PostgreSQL driver's descriptor: the protocol's parting words and the server its
    ``info`` names (psycopg2's and psycopg 3's alike), with the driver's own socket, errors
    and closed flags."""
    return ClientLibrary(
        client,
        DB_SYSTEM,
        socket_of=socket_of,
        closing=postgres_closing,
        lost=lost,
        closed=closed,
        server_of=postgres_server,
    )


def _fileno(connection: Any) -> int:
    return int(connection.fileno())


def _closed(connection: Any) -> bool:
    return bool(connection.closed)  # 1: closed, 2: broken


def library(module: ModuleType) -> ClientLibrary:
    """psycopg2's descriptor (``module`` is psycopg2)."""
    operational = module.OperationalError
    interface = module.InterfaceError

    def lost(connection: Any, exc: BaseException) -> bool:
        if isinstance(exc, (operational, interface)):
            # OperationalError also covers serialisation failures and cancelled queries:
            # only a broken connection (closed == 2) counts.
            return bool(getattr(connection, "closed", 0) == 2)
        return is_socket_gone(exc)

    return postgres_library(CLIENT, socket_of=_fileno, lost=lost, closed=_closed)


# Subclasses made per base class (the user's connection_factory / cursor_factory); each
# tracked class maps to itself too, so that it is never wrapped a second time.
_connection_classes: dict[type, type] = {}
_cursor_classes: dict[type, type] = {}


def _tracked_cursor_class(base: type) -> type:
    """A subclass of ``base`` whose server operations are watched for stale reuse."""
    tracked = _cursor_classes.get(base)
    if tracked is not None:
        return tracked

    def operate(name: str) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            # Looked up at each call: a base patched later (mock.patch in a test suite)
            # is honoured. Called unbound: no bound method per query.
            unbound = getattr(base, name)
            connection = self.connection
            state = getattr(connection, "_lifecycle_probe_state", None)
            # A connection this module did not make, or the hot path.
            if state is None:
                return unbound(self, *args, **kwargs)
            if state.same_invocation_use():
                try:
                    return unbound(self, *args, **kwargs)
                finally:
                    state.last_use_ns = _time_ns()  # idle time counts from a use's end
            return first_use_call(state, unbound.__get__(self), args, kwargs, connection)

        method.__name__ = name
        return method

    namespace = {name: operate(name) for name in _OPERATIONS if hasattr(base, name)}
    namespace["__module__"] = base.__module__
    tracked_class = type(base.__name__, (base,), namespace)
    _cursor_classes[base] = tracked_class
    _cursor_classes[tracked_class] = tracked_class
    return tracked_class


_OPERATIONS = ("execute", "executemany", "callproc", "copy_expert", "copy_from", "copy_to")


def _adopt(cursor: Any) -> None:
    """Make a cursor that another ``cursor()`` made a tracked one, where Python allows it:
    a cursor class written in Python (psycopg2.extras' are) can be given its tracked
    subclass as its class; a C cursor type cannot, and its cursor stays untracked."""
    kind = type(cursor)
    tracked = _tracked_cursor_class(kind)
    if tracked is not kind:
        cursor.__class__ = tracked


def _tracked_connection_class(base: type, plain: type, cursor_base: type) -> type:
    """A subclass of ``base`` whose cursors (of whatever factory) are tracked ones.

    ``plain`` is psycopg2's own connection class. A ``base`` with a ``cursor()`` of its own
    (extras.DictConnection, LoggingConnection, a user's) chooses its cursors' default
    class there, and may not even take a ``cursor_factory``: its cursor() runs as it is,
    and the cursor it made is adopted.
    """
    tracked = _connection_classes.get(base)
    if tracked is not None:
        return tracked

    base_cursor = base.cursor  # type: ignore[attr-defined]

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            # The common call, ``connection.cursor()``: one lookup of the tracked class
            # made for the connection's cursor_factory (made at its first cursor).
            try:
                tracked = _cursor_classes.get(self.cursor_factory or cursor_base)
            except TypeError:  # an unhashable factory: the general path below copes
                tracked = None
            if tracked is not None:
                return base_cursor(self, cursor_factory=tracked)
        try:
            if len(args) >= 2:  # cursor(name, cursor_factory, ...)
                factory = args[1] or self.cursor_factory or cursor_base
                args = (args[0], _tracked_cursor_class(factory), *args[2:])
            else:
                factory = kwargs.get("cursor_factory") or self.cursor_factory or cursor_base
                kwargs["cursor_factory"] = _tracked_cursor_class(factory)
        except Exception as exc:
            report_failure("psycopg2 cursor tracking", exc)
        return base_cursor(self, *args, **kwargs)

    def own_cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        made = base_cursor(self, *args, **kwargs)
        try:
            _adopt(made)
        except Exception as exc:
            report_failure("psycopg2 cursor tracking", exc)
        return made

    overrides = getattr(base_cursor, "__func__", base_cursor) is not plain.cursor  # type: ignore[attr-defined]
    namespace = {"cursor": own_cursor if overrides else cursor, "__module__": base.__module__}
    tracked_class = type(base.__name__, (base,), namespace)
    _connection_classes[base] = tracked_class
    _connection_classes[tracked_class] = tracked_class
    return tracked_class


def patch(module: ModuleType) -> None:
    """Make ``psycopg2.connect`` make tracked connections (once per module object).

    psycopg2's connection and cursor are C types whose methods cannot be patched, and a
    proxy around them would fail psycopg2's own type checks (``register_type``,
    ``sql.Composable.as_string``, ``extras.execute_values``...). So ``connect`` is given
    a subclass of the connection class asked for (``connection_factory``), whose
    ``cursor()`` hands out subclasses of the cursor class asked for: real psycopg2
    objects, which every psycopg2 function accepts.
    """
    if getattr(module, "_lifecycle_probe_tracked", False):
        return
    described = library(module)
    extensions = module.extensions

    def connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            if len(args) >= 2:  # connect(dsn, connection_factory, ...)
                base = args[1] or extensions.connection
                args = (
                    args[0],
                    _tracked_connection_class(base, extensions.connection, extensions.cursor),
                    *args[2:],
                )
            else:
                base = kwargs.get("connection_factory") or extensions.connection
                kwargs["connection_factory"] = _tracked_connection_class(
                    base, extensions.connection, extensions.cursor
                )
        except Exception as exc:
            report_failure("psycopg2 connection tracking", exc)
        connection = wrapped(*args, **kwargs)
        try:
            address, port = postgres_server(connection)
            connection._lifecycle_probe_state = new_connection(described, address, port)
        except Exception as exc:
            report_failure("psycopg2 connection tracking", exc)
        return connection

    wrapt.wrap_function_wrapper(module, "connect", connect)
    setattr(module, "_lifecycle_probe_tracked", True)  # noqa: B010 (a module has no such attribute to type)
