"""The soak's OTLP/HTTP collector on 127.0.0.1: it tallies what it receives and
misbehaves on demand.

Modes (switch :attr:`SoakCollector.mode` with :meth:`SoakCollector.set_mode` at any time):

- ``ok``: reads the request, tallies it, answers 200;
- ``refuse``: the port is closed and every open connection too (connections refused);
- ``status:N``: reads the request and answers HTTP N, tallying nothing;
- ``hang``: reads the request, tallies it, never answers (until the mode changes, or
  ``HANG_LIMIT_S``; then the connection is closed);
- ``slow``: reads the request, tallies it, answers 200 after ``SLOW_S``;
- ``reset``: reads the request's head and resets the connection (TCP RST).

What was read in full is tallied whether answered or not (under ``hang`` and ``slow``
the client may give up and send it again: the tally counts it once).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from tests.soak.otlp_tally import OtlpTally

MODES = ("ok", "refuse", "status:503", "status:429", "hang", "slow", "reset")
HANG_LIMIT_S = 10.0
SLOW_S = 0.15


class SoakCollector:
    def __init__(self) -> None:
        self.tally = OtlpTally()
        self.mode = "ok"
        self.port = 0
        self.mode_log: list[tuple[int, str]] = []  # (time_ns, mode) of every switch
        self.answers: dict[str, int] = {}
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._holder: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._changed = threading.Condition(self._lock)
        self._closed = False

    # -- life -------------------------------------------------------------------------------

    def start(self) -> SoakCollector:
        self._listen()
        self.mode_log.append((time.time_ns(), "ok"))
        return self

    def _bound(self) -> socket.socket:
        # While the port is closed, an outgoing connection may be given it as its local
        # port for a while: try again (bounded).
        deadline = time.monotonic() + 5.0
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            return sock

    def _listen(self) -> None:
        # Refusing, the port stays bound but not listening (connections are refused and
        # no other socket can take the port): listening again is then this socket's.
        listener, self._holder = self._holder or self._bound(), None
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(
            target=self._accept, args=(listener,), name="soak-collector", daemon=True
        ).start()

    def _unlisten(self, hold: bool = False) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown first: a thread blocked in accept() would keep it listening
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        if hold:
            self._holder = self._bound()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def set_mode(self, mode: str) -> None:
        if mode == self.mode:
            return
        previous = self.mode
        with self._lock:
            self.mode = mode
            self.mode_log.append((time.time_ns(), mode))
            self._changed.notify_all()
        if mode == "refuse":
            self._unlisten(hold=True)
        elif previous == "refuse":
            self._listen()

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        self._unlisten()
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mode_at(self, time_ns: int) -> str:
        """The mode the collector was in at ``time_ns``."""
        mode = "ok"
        for switched_ns, switched_to in self.mode_log:
            if switched_ns > time_ns:
                break
            mode = switched_to
        return mode

    # -- serving ----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._listener is not listener:
                    conn.close()
                    return
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _answer(self, key: str) -> None:
        with self._lock:
            self.answers[key] = self.answers.get(key, 0) + 1

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                path = request_line.split(" ")[1].split("?")[0]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in header_lines)
                }
                mode = self.mode
                if mode == "reset":
                    self._answer("reset")
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                body, buffer = buffer[:length], buffer[length:]
                mode = self.mode
                if mode in ("ok", "slow", "hang"):
                    self.tally.add_body(path, body)
                if mode == "hang":
                    self._answer("hang")
                    deadline = time.monotonic() + HANG_LIMIT_S
                    with self._lock:
                        while (
                            self.mode == "hang" and not self._closed and time.monotonic() < deadline
                        ):
                            self._changed.wait(max(0.0, deadline - time.monotonic()))
                    return
                if mode == "slow":
                    time.sleep(SLOW_S)
                status = 200
                extra = b""
                if mode.startswith("status:"):
                    status = int(mode.split(":", 1)[1])
                    if status == 429:
                        extra = b"Retry-After: 1\r\n"
                self._answer(str(status))
                payload = b"{}"
                conn.sendall(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n".encode()
                    + extra
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()
