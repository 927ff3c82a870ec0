"""The ``otlp-file`` destination's file: OTLP JSON lines appended whole, never torn."""

from __future__ import annotations

import _thread
import errno
import os

__all__ = ["AppendedLines"]


class AppendedLines:
    """The OTLP file, shared by the span and metric exports of this process and by other
    processes (every environment of a function may write to one file): each line goes out
    in one ``write`` on an ``O_APPEND`` descriptor, so lines never interleave.

    A file that cannot be opened (its directory missing or read-only) or written (the disk
    full) fails the export, which is then sent again with the next flush, and given up and
    counted like any other failed export: it is opened again at every write until it can
    be, and a line that does not fit is not begun (a torn line would spoil the file for
    every reader).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._lock = _thread.allocate_lock()
        self.closed = False
        try:
            self._open()
        except OSError:
            pass  # said by the export that fails; tried again at the next write

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def write_line(self, data: bytes) -> None:
        """Append ``data`` (one line, its newline included) whole, or raise OSError."""
        with self._lock:
            fd = self._open()
            try:
                space = os.fstatvfs(fd)
                if space.f_bavail * space.f_frsize < len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise
                # No statvfs here (a pipe, /dev/full): the write says it.
            view = memoryview(data)
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError:
                self._cut_torn_line(fd, start, len(data) - len(view))
                raise

    @staticmethod
    def _cut_torn_line(fd: int, start: int, written: int) -> None:
        # Best effort: take back the part of a line that did not fit, if nothing was
        # appended after it meanwhile.
        if not written:
            return
        try:
            if os.fstat(fd).st_size == start + written:
                os.ftruncate(fd, start)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                if self._fd is not None:
                    os.close(self._fd)

    def close_inherited(self) -> None:
        """Close a forked child's copy, without the lock: a parent thread that held it
        at the fork does not exist in the child."""
        if not self.closed:
            self.closed = True
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError:
                    pass
