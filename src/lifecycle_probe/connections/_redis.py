"""redis-py: its pure-Python connection classes are patched in place (no proxy needed).

redis-py replaces a dropped pooled connection by itself: ``ConnectionPool.get_connection``
calls ``connect()`` (a no-op on a connected socket) and then ``can_read()``, which sees the
server's FIN, disconnects and connects again. The socket check runs in that first
``connect()`` after a freeze, so the reuse is ``detected`` and the reconnect's cost is the
time the next real connect (TCP, HELLO/AUTH, SELECT) took. A connection-level error in
the middle of a command may still be retried by the client's ``Retry``: it becomes
``failed`` only if it escapes ``Redis.execute_command`` or ``Pipeline.execute``.
"""

from __future__ import annotations

import threading
import time

import wrapt  # type: ignore[import-untyped]  # wrapt 1.17 ships no type information

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.library import ClientLibrary, is_socket_gone
from lifecycle_probe.connections.tracking import (
    ConnectionState,
    begin_reuse,
    new_connection,
    note_use,
    settle_reuse,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = ["library", "patch"]

CLIENT = "redis-py"
DB_SYSTEM = "redis"
STATE = "_lifecycle_probe_connection"

# The connection whose reuse met an error the client may still retry, per thread.
_retrying = threading.local()


def _closing(data: bytes) -> bool:
    # RESP3 pushes (client-side caching invalidations) may arrive unasked on a live
    # connection: only EOF or a reset means the server is gone.
    return False


def _fd_of(connection: Any) -> int | None:
    sock = connection._sock
    return None if sock is None else int(sock.fileno())


def _server_of(connection: Any) -> tuple[str | None, int | None]:
    # A Unix socket connection has a path and no host.
    host = getattr(connection, "host", None)
    port = getattr(connection, "port", None)
    address = host if host is not None else getattr(connection, "path", None)
    return address, None if host is None or port is None else int(port)


def library(module: ModuleType) -> ClientLibrary:
    """redis-py's descriptor (``module`` is redis). Its connections carry no closed flag:
    a ``Redis`` client has no socket of its own, and its pool replaces dead ones."""
    exceptions = module.exceptions
    gone = (exceptions.ConnectionError, exceptions.TimeoutError)
    # Subclasses of ConnectionError that say nothing about a dropped connection.
    not_gone = tuple(
        getattr(exceptions, name)
        for name in ("AuthenticationError", "MaxConnectionsError")
        if hasattr(exceptions, name)
    )

    def lost(connection: Any, exc: BaseException) -> bool:
        if isinstance(exc, gone):
            return not isinstance(exc, not_gone)
        return is_socket_gone(exc)

    return ClientLibrary(
        CLIENT, DB_SYSTEM, socket_of=_fd_of, closing=_closing, lost=lost, server_of=_server_of
    )


def patch(module: ModuleType) -> None:
    """Track every redis-py connection (once per class)."""
    cls = module.connection.AbstractConnection
    if cls.__dict__.get("_lifecycle_probe_tracked", False):
        return
    described = library(module)

    def connect_check_health(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = instance.__dict__.get(STATE)
        if instance._sock is not None:
            # Already connected: the pool is handing this connection out again.
            if state is not None:
                try:
                    if state.reuse is None and not state.busy and state.crossed_boundary():
                        begin_reuse(state, described.fd(instance))
                except Exception as exc:
                    report_failure("redis connection tracking", exc)
            return wrapped(*args, **kwargs)
        if state is not None:
            # A reconnect: its handshake (HELLO, AUTH, SELECT) is part of the reconnect's
            # cost, not the reuse's first reply.
            state.busy = True
        started_ns = time.perf_counter_ns()
        try:
            result = wrapped(*args, **kwargs)
        finally:
            if state is not None:
                state.busy = False
        try:
            cost_ns = time.perf_counter_ns() - started_ns
            if state is None:
                instance.__dict__[STATE] = new_connection(described, *_server_of(instance))
            else:
                state.reconnected(cost_ns)
        except Exception as exc:
            report_failure("redis connection tracking", exc)
        return result

    def _deferred(state: ConnectionState, connection: Any, exc: BaseException) -> None:
        reuse = state.reuse
        if described.is_lost(connection, exc) and reuse is not None:
            # The client's Retry may still mend it: settled when the command is over.
            reuse.error = exc
            _retrying.state = state
        else:
            settle_reuse(state)  # a reply came back (an error reply): the reuse worked

    def send_packed_command(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = instance.__dict__.get(STATE)
        if state is None:
            return wrapped(*args, **kwargs)
        note_use(state, instance)
        if state.reuse is None or state.busy:
            return wrapped(*args, **kwargs)  # the hot path
        try:
            return wrapped(*args, **kwargs)
        except BaseException as exc:
            _deferred(state, instance, exc)
            raise

    def read_response(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = instance.__dict__.get(STATE)
        if state is None or state.reuse is None or state.busy:
            return wrapped(*args, **kwargs)  # the hot path
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _deferred(state, instance, exc)
            raise
        # A reply came back: the reuse is over, whatever happened before this attempt.
        settle_reuse(state)
        return result

    def command(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except BaseException:
            # The client gave up: the connection error its retries could not mend
            # reaches the user, and the reuse failed.
            state = _retrying.__dict__.pop("state", None)
            if state is not None and state.reuse is not None and state.reuse.error is not None:
                settle_reuse(state, state.reuse.error)
            raise

    wrapt.wrap_function_wrapper(cls, "connect_check_health", connect_check_health)
    wrapt.wrap_function_wrapper(cls, "send_packed_command", send_packed_command)
    wrapt.wrap_function_wrapper(cls, "read_response", read_response)
    wrapt.wrap_function_wrapper(module.client.Redis, "execute_command", command)
    wrapt.wrap_function_wrapper(module.client.Pipeline, "execute", command)
    cls._lifecycle_probe_tracked = True
