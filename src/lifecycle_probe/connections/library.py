"""What connection tracking must know of one client library, in one small descriptor.

Tracking itself (``tracking.py``) knows no driver. Each driver module describes its
library once: where a connection's socket is, whether bytes waiting on an idle socket are
the server's parting words, and which errors mean the connection is gone. Every tracked
connection carries its library's descriptor, so the tracking functions need nothing else.
"""

from __future__ import annotations

import errno

from lifecycle_probe._safe import report_failure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["GONE_ERRNOS", "UNKNOWN_LIBRARY", "ClientLibrary", "is_socket_gone"]

# Errors of the socket layer itself that mean the peer is gone, whatever the driver.
GONE_ERRNOS = frozenset(
    {errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ECONNABORTED, errno.ETIMEDOUT}
)


def is_socket_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is the socket layer saying the peer is gone (ECONNRESET, EPIPE...)."""
    return isinstance(exc, OSError) and exc.errno in GONE_ERRNOS


def _no_socket(connection: Any) -> int | None:
    return None


def _never_closing(data: bytes) -> bool:
    # Unknown protocol: bytes waiting on an idle socket say nothing about its death.
    return False


def _socket_gone(connection: Any, exc: BaseException) -> bool:
    return is_socket_gone(exc)


class ClientLibrary:
    """One client library as tracking sees it.

    ``socket_of(connection)`` is the descriptor of a connection's socket (None, or an
    exception, when it has none: the socket check is then skipped); ``closing(data)``
    tells whether the bytes an idle socket holds end the session; ``lost(connection, exc)``
    whether an error a use raised means the connection is gone (``failed``), not a bad
    query.
    """

    __slots__ = ("closing", "db_system", "lost", "name", "socket_of")

    def __init__(
        self,
        name: str,
        db_system: str | None,
        *,
        socket_of: Callable[[Any], int | None] = _no_socket,
        closing: Callable[[bytes], bool] = _never_closing,
        lost: Callable[[Any, BaseException], bool] = _socket_gone,
    ) -> None:
        self.name = name
        # None for HTTP: the stale event then names the server by address and port.
        self.db_system = db_system
        self.socket_of = socket_of
        self.closing = closing
        self.lost = lost

    def fd(self, connection: Any) -> int | None:
        """The connection's socket descriptor, or None when there is none to look at."""
        try:
            fd = self.socket_of(connection)
        except Exception:  # a closed connection has no descriptor: nothing to look at
            return None
        return None if fd is None or fd < 0 else fd

    def is_lost(self, connection: Any, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone (False when that cannot be told)."""
        try:
            return bool(self.lost(connection, exc))
        except Exception as failure:
            report_failure(f"{self.name} connection tracking", failure)
            return False

    def __repr__(self) -> str:
        return f"ClientLibrary({self.name!r})"


# A connection whose library is not known: no socket to look at, only the socket layer's
# own errors count as the connection being gone.
UNKNOWN_LIBRARY = ClientLibrary("unknown", None)
