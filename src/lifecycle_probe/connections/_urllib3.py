"""urllib3 pools (which carry requests and boto3/botocore): their keep-alive connections.

Each ``HTTPConnection``'s state lives in its instance ``__dict__``, with the server's host
and port only: never a URL, a query string, a header or a body. An HTTP connection has no
``db.system``.

urllib3 replaces a dropped keep-alive connection by itself: ``HTTPConnectionPool._get_conn``
asks ``is_connection_dropped`` (is the idle socket readable?) before handing a pooled
connection out, closes it if so, and the request then connects the same object again. The
socket check runs in that ``is_connection_dropped`` after a freeze, so such a reuse is
``detected``, and what reconnecting cost is the time the next ``connect`` (TCP and TLS)
took.

A drop the check cannot see (the server closes the socket after reading the request)
makes the request fail with a connection-level error (``RemoteDisconnected``,
``ConnectionResetError``...), which ``urlopen`` may retry on another connection (a GET
with the default ``Retry``; not a POST, nor ``retries=False`` as botocore passes), and so
may a retry layer above it (botocore's, see ``_botocore``). The reuse is settled when the
outermost of these retrying calls is over (:func:`retrying_call`): ``failed`` if an error
escapes it (the error recorded is the connection's own, the one urllib3 may have wrapped
in ``ProtocolError`` or ``MaxRetryError``, and botocore in ``ConnectionClosedError``),
``detected`` if a retry succeeded: the connection was quietly replaced, and the cost
reported is the replacing connection's ``connect`` (or, when the retry took an already
open connection, the time from the failure to the retry's reply, a backoff included).

A closed connection object that connects again (after a ``Connection: close`` reply, say)
is a new connection, not a reuse.
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

__all__ = ["library", "patch", "retrying_call"]

CLIENT = "urllib3"
# HTTP has no db.system: the event names the server by address and port.
NO_DB_SYSTEM = None
STATE = "_lifecycle_probe_connection"
CONNECTING = "_lifecycle_probe_connecting"

# Per thread: how deep in nested retrying calls (urlopen, botocore's retry loop), and the
# reuses whose request met a connection-level error that one of them may still retry,
# each with when it failed.
_local = threading.local()


def _closing(data: bytes) -> bool:
    # An idle HTTP/1.1 connection is sent nothing unasked but a parting reply (a 408) or
    # a TLS close_notify before the server closes it; urllib3 drops it on any byte too.
    return True


def _fd_of(connection: Any) -> int | None:
    sock = connection.sock
    return None if sock is None else int(sock.fileno())


def _server_of(connection: Any) -> tuple[str | None, int | None]:
    port = getattr(connection, "port", None)
    return getattr(connection, "host", None), None if port is None else int(port)


def library(module: ModuleType) -> ClientLibrary:
    """urllib3's descriptor (``module`` is urllib3). A pool has no socket of its own."""
    import http.client

    gone = (
        module.exceptions.ProtocolError,
        ConnectionError,  # ConnectionResetError (RemoteDisconnected), BrokenPipeError...
        http.client.BadStatusLine,
    )

    def lost(connection: Any, exc: BaseException) -> bool:
        return isinstance(exc, gone) or is_socket_gone(exc)

    return ClientLibrary(
        CLIENT, NO_DB_SYSTEM, socket_of=_fd_of, closing=_closing, lost=lost, server_of=_server_of
    )


def _pending() -> list[tuple[ConnectionState, int]]:
    pending: list[tuple[ConnectionState, int]] | None = _local.__dict__.get("pending")
    if pending is None:
        pending = _local.pending = []
    return pending


def _settle_pending(succeeded: bool) -> None:
    pending = _local.__dict__.pop("pending", None)
    if not pending:
        return
    for state, failed_ns in pending:
        reuse = state.reuse
        if reuse is None:
            continue
        if succeeded:
            # A retry mended it: the connection was replaced without a word to the caller.
            if not reuse.reconnect_ns:
                reuse.reconnect_ns = max(1, time.perf_counter_ns() - failed_ns)
            settle_reuse(state)
        else:
            # Only an error judged connection-level when its request failed is pending.
            settle_reuse(state, reuse.error)


def _settle_pending_safely(succeeded: bool) -> None:
    try:
        _settle_pending(succeeded)
    except Exception as failure:
        report_failure("urllib3 connection tracking", failure)


def retrying_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``wrapt`` wrapper of a call that may retry failed urllib3 requests.

    ``urlopen`` itself, or a retry layer above it (botocore's). A reuse whose request
    failed with a connection-level error inside is settled when the outermost such call
    is over: ``failed`` if it raised, ``detected`` if it returned. The result or
    exception passes through untouched (the same object).
    """
    attrs = _local.__dict__
    depth = attrs.get("depth", 0)
    attrs["depth"] = depth + 1
    try:
        result = wrapped(*args, **kwargs)
    except BaseException:
        attrs["depth"] = depth
        if depth == 0 and "pending" in attrs:
            _settle_pending_safely(False)
        raise
    attrs["depth"] = depth
    if depth == 0 and "pending" in attrs:
        _settle_pending_safely(True)
    return result


def patch(module: ModuleType) -> None:
    """Track every urllib3 pooled connection (once)."""
    pool_cls = module.connectionpool.HTTPConnectionPool
    if pool_cls.__dict__.get("_lifecycle_probe_tracked", False):
        return
    described = library(module)

    def connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        attrs = instance.__dict__
        if attrs.get(CONNECTING):  # a subclass's connect calling its parent's
            return wrapped(*args, **kwargs)
        attrs[CONNECTING] = True
        started_ns = time.perf_counter_ns()
        try:
            result = wrapped(*args, **kwargs)
        finally:
            attrs[CONNECTING] = False
        try:
            cost_ns = time.perf_counter_ns() - started_ns
            state = attrs.get(STATE)
            if state is not None and state.reuse is not None:
                # The pool found it dropped and closed it: this is its replacement.
                state.reconnected(cost_ns)
                return result
            new_state = new_connection(described, *_server_of(instance))
            attrs[STATE] = new_state
            for pending_state, _ in _local.__dict__.get("pending", ()):
                reuse = pending_state.reuse
                if (
                    reuse is not None
                    and not reuse.reconnect_ns
                    # To the same server: a connection made meanwhile to another (a
                    # credential refresh inside botocore's retry loop) replaces nothing.
                    and (pending_state.address, pending_state.port)
                    == (new_state.address, new_state.port)
                ):
                    # A retry's new connection replaces the one whose request failed.
                    pending_state.reconnected(cost_ns)
        except Exception as exc:
            report_failure("urllib3 connection tracking", exc)
        return result

    def is_connection_dropped(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        # _get_conn is handing a pooled connection out again: the first time after a
        # freeze, look at its socket before urllib3 does.
        try:
            conn = args[0] if args else kwargs.get("conn")
            state = getattr(conn, "__dict__", {}).get(STATE)
            if (
                state is not None
                and state.reuse is None
                and conn.sock is not None
                and state.crossed_boundary()
            ):
                begin_reuse(state, described.fd(conn))
        except Exception as exc:
            report_failure("urllib3 connection tracking", exc)
        return wrapped(*args, **kwargs)

    def make_request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        conn = args[0] if args else kwargs.get("conn")
        attrs: dict[str, Any] = getattr(conn, "__dict__", None) or {}
        state = attrs.get(STATE)
        if state is not None and state.reuse is None and conn.sock is None:
            # Closed on purpose (a ``Connection: close`` reply): it reconnects as new.
            del attrs[STATE]
            state = None
        if state is None:
            # A new connection: it connects in this request and is made tracked there.
            try:
                return wrapped(*args, **kwargs)
            finally:
                if STATE in attrs:
                    attrs[STATE].uses += 1
        note_use(state, conn)
        if state.reuse is None:
            return wrapped(*args, **kwargs)  # the hot path
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            try:
                reuse = state.reuse
                lost = described.is_lost(conn, exc)
                if reuse is not None and _local.__dict__.get("depth", 0) and lost:
                    # urlopen, or a retry layer above it, may retry it on another
                    # connection: settled when the outermost retrying call is over.
                    reuse.error = exc
                    _pending().append((state, time.perf_counter_ns()))
                else:
                    settle_reuse(state, exc if lost else None)
            except Exception as failure:
                report_failure("urllib3 connection tracking", failure)
            raise
        # The status line and headers came back: the reuse worked.
        settle_reuse(state)
        return result

    def put_conn(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        # Back in the pool: the connection is idle from now on.
        conn = args[0] if args else kwargs.get("conn")
        if conn is not None:
            state = getattr(conn, "__dict__", {}).get(STATE)
            if state is not None:
                state.last_use_ns = time.time_ns()
        return wrapped(*args, **kwargs)

    connection = module.connection
    wrapt.wrap_function_wrapper(connection.HTTPConnection, "connect", connect)
    if "connect" in connection.HTTPSConnection.__dict__:
        wrapt.wrap_function_wrapper(connection.HTTPSConnection, "connect", connect)
    wrapt.wrap_function_wrapper(
        module.connectionpool, "is_connection_dropped", is_connection_dropped
    )
    wrapt.wrap_function_wrapper(pool_cls, "_make_request", make_request)
    wrapt.wrap_function_wrapper(pool_cls, "urlopen", retrying_call)
    wrapt.wrap_function_wrapper(pool_cls, "_put_conn", put_conn)
    pool_cls._lifecycle_probe_tracked = True
