"""What connection tracking must know of one client library, in one small descriptor.

Tracking itself (``tracking.py``) knows no driver. Each driver module describes its
library once (its ``library(module)``): where a connection's socket is, whether bytes
waiting on an idle socket are the server's parting words, which errors mean the
connection is gone, what the client's own flags say, and which server it talks to. Every
tracked connection carries its library's descriptor, so the tracking functions need
nothing else; ``reusable`` (``reuse.py``) checks its connections with the same
descriptors.
"""

from __future__ import annotations

import errno

from lifecycle_probe._safe import report_failure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "GONE_ERRNOS",
    "UNKNOWN_LIBRARY",
    "ClientLibrary",
    "is_socket_gone",
    "tls_alert_waiting",
]

# Errors of the socket layer itself that mean the peer is gone, whatever the driver.
GONE_ERRNOS = frozenset(
    {errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ECONNABORTED, errno.ETIMEDOUT}
)


def is_socket_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is the socket layer saying the peer is gone (ECONNRESET, EPIPE...)."""
    return isinstance(exc, OSError) and exc.errno in GONE_ERRNOS


# TLS record content types: change_cipher_spec, alert, handshake, application_data.
_TLS_ALERT = 0x15
_TLS_RECORD_TYPES = frozenset({0x14, _TLS_ALERT, 0x16, 0x17})
_TLS_HEADER = 5  # content type, version (3, x), length


def tls_alert_waiting(data: bytes) -> bool:
    """Whether the TLS records at the start of ``data`` include an alert: the server's
    close_notify (or a fatal alert), sent last before its FIN.

    Up to TLS 1.2 an alert travels as a record of content type 0x15, after whatever the
    server said last (an encrypted parting message is an application data record, 0x17,
    before it). TLS 1.3 gives every record the type 0x17: its alerts look like data. Bytes
    that are not TLS records (a protocol's plain messages) hold no alert.
    """
    offset = 0
    size = len(data)
    while offset < size:
        kind = data[offset]
        if kind == _TLS_ALERT:
            return offset + 1 == size or data[offset + 1] == 3
        if kind not in _TLS_RECORD_TYPES or offset + _TLS_HEADER > size or data[offset + 1] != 3:
            return False
        offset += _TLS_HEADER + int.from_bytes(data[offset + 3 : offset + 5], "big")
    return False


def _no_socket(connection: Any) -> int | None:
    return None


def _no_server(connection: Any) -> tuple[str | None, int | None]:
    return None, None


def _never_closing(data: bytes) -> bool:
    # Unknown protocol: bytes waiting on an idle socket say nothing about its death.
    return False


def _socket_gone(connection: Any, exc: BaseException) -> bool:
    return is_socket_gone(exc)


class ClientLibrary:
    """One client library as tracking (and ``reusable``) sees it.

    ``socket_of(connection)`` is the descriptor of a connection's socket (None, or an
    exception, when it has none: the socket check is then skipped); ``closing(data)``
    tells whether the bytes an idle socket holds end the session; ``lost(connection, exc)``
    whether an error a use raised means the connection is gone (``failed``), not a bad
    query; ``closed(connection)``, for a library whose connections carry closed flags,
    whether they say closed or broken (None: its objects have no such flags, and an
    object without a socket may be a client or pool that keeps its own);
    ``server_of(connection)`` its server's (address, port).
    """

    __slots__ = ("closed", "closing", "db_system", "lost", "name", "server_of", "socket_of")

    def __init__(
        self,
        name: str,
        db_system: str | None,
        *,
        socket_of: Callable[[Any], int | None] = _no_socket,
        closing: Callable[[bytes], bool] = _never_closing,
        lost: Callable[[Any, BaseException], bool] = _socket_gone,
        closed: Callable[[Any], bool] | None = None,
        server_of: Callable[[Any], tuple[str | None, int | None]] = _no_server,
    ) -> None:
        self.name = name
        # None for HTTP: the stale event then names the server by address and port.
        self.db_system = db_system
        self.socket_of = socket_of
        self.closing = closing
        self.lost = lost
        self.closed = closed
        self.server_of = server_of

    def fd(self, connection: Any) -> int | None:
        """The connection's socket descriptor, or None when there is none to look at."""
        try:
            fd = self.socket_of(connection)
        except Exception:  # a closed connection has no descriptor: nothing to look at
            return None
        return None if fd is None or fd < 0 else fd

    def server(self, connection: Any) -> tuple[str | None, int | None]:
        """The connection's server (address, port); (None, None) when it cannot be told."""
        try:
            return self.server_of(connection)
        except Exception:
            return None, None

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
