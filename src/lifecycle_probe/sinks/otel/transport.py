"""One OTLP/HTTP request at a time over a kept-alive connection, bounded in time.

A few lines over a socket rather than ``http.client``, which would import ``email`` and
``ssl`` (≈ 8 MB of resident memory and 25 ms here) into every function that exports:
``ssl`` comes in only for an https endpoint. Every step (connect, send, each read) is
bounded by the time left of the request; the connection is kept between flushes (Lambda's
collector layer listens on localhost) and made again when the collector closed it, e.g.
during a freeze.
"""

from __future__ import annotations

import _socket
import zlib
from time import monotonic
from typing import TYPE_CHECKING, Any

from lifecycle_probe.sinks.otel.failures import ExportError, error_kind, redact_url

if TYPE_CHECKING:
    from lifecycle_probe.sinks.otel.endpoints import Endpoint

__all__ = ["HttpTransport"]

# Status line and headers of a collector's answer; more means it is not one.
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024


class HttpTransport:
    """POSTs JSON bodies to one endpoint's URL."""

    def __init__(self, endpoint: Endpoint, user_agent: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {redact_url(endpoint.url)}")
        self.destination = redact_url(endpoint.url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._certificate = endpoint.certificate
        self._gzip = endpoint.gzip
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None:
            host += f":{parts.port}"
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            f"User-Agent: {user_agent}",
        ]
        if self._gzip:
            lines.append("Content-Encoding: gzip")
        lines.extend(f"{name}: {value}" for name, value in endpoint.headers)
        self._head = "\r\n".join(lines).encode("latin-1", "replace")
        self._socket: Any = None

    def post(self, body: bytes, timeout_s: float) -> None:
        """Send ``body``; return when the collector took it (a 2xx answer), else raise
        :class:`ExportError` with a kind safe to log. Never waits past ``timeout_s``."""
        deadline = monotonic() + max(0.0, timeout_s)
        if self._gzip:
            packer = zlib.compressobj(wbits=31)  # 31: the gzip container
            body = packer.compress(body) + packer.flush()
        request = self._head + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        try:
            status = self._exchange(request, deadline)
        except ExportError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise ExportError(error_kind(exc)) from None
        except _Closed:
            self.close()
            raise ExportError("connection closed without an answer") from None
        if not 200 <= status < 300:
            raise ExportError(f"HTTP {status}")

    def _exchange(self, request: bytes, deadline: float) -> int:
        reused = self._socket is not None
        if not reused:
            self._socket = self._connect(deadline)
        try:
            return self._send_and_read(request, deadline)
        except (ConnectionError, _Closed):
            if not reused:
                raise
        # A kept-alive connection the collector closed meanwhile (during a freeze, or its
        # idle timeout): once more on a new one.
        self.close()
        self._socket = self._connect(deadline)
        return self._send_and_read(request, deadline)

    def _connect(self, deadline: float) -> Any:
        # getaddrinfo takes no timeout: a slow DNS holds the sink's own thread, which the
        # caller never waits for past its bound (localhost, the collector layer's, is not
        # looked up in DNS).
        last: OSError = TimeoutError("connect")
        for family, kind, proto, _, address in _socket.getaddrinfo(
            self._host, self._port, 0, _socket.SOCK_STREAM
        ):
            sock: Any = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(_left(deadline))
                sock.connect(address)
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                if self._tls:
                    sock = self._wrap(sock, deadline)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last

    def _wrap(self, raw: Any, deadline: float) -> Any:
        import socket
        import ssl

        context = ssl.create_default_context(cafile=self._certificate)
        plain = socket.socket(fileno=raw.detach())
        plain.settimeout(_left(deadline))
        return context.wrap_socket(plain, server_hostname=self._host)

    def _send_and_read(self, request: bytes, deadline: float) -> int:
        sock = self._socket
        sock.settimeout(_left(deadline))
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            if len(received) > _MAX_HEAD:
                raise ExportError("not an HTTP answer")
            sock.settimeout(_left(deadline))
            chunk = sock.recv(65536)
            if not chunk:
                if received:
                    raise ExportError("answer cut off")
                raise _Closed
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
            raise ExportError("not an HTTP answer")
        try:
            status = int(status_line[1])
        except ValueError:
            raise ExportError("not an HTTP answer") from None
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip().lower()
        length = fields.get("content-length")
        keep = fields.get("connection") != "close" and status_line[0] != "HTTP/1.0"
        if length is not None and length.isdigit() and int(length) <= _MAX_BODY:
            missing = int(length) - len(rest)
            while missing > 0:
                sock.settimeout(_left(deadline))
                chunk = sock.recv(min(missing, 65536))
                if not chunk:
                    keep = False
                    break
                missing -= len(chunk)
        else:
            keep = False  # a chunked or unbounded body: not worth reading, start afresh
        if not keep:
            self.close()
        return status

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class _Closed(Exception):
    """The peer closed a kept-alive connection before answering."""


def _left(deadline: float) -> float:
    left = deadline - monotonic()
    if left <= 0:
        raise TimeoutError("the export's time is up")
    return left
