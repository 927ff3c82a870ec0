"""The one fail-open guard and the package logger.

Nothing in the probe may raise into user code. Every hook and sink runs behind ``guard``;
a failure is logged once per kind of failure (where it happened and the exception type),
never once per invocation, and the invocation goes on.

This module sits on the INIT path, so it imports nothing that a bare interpreter has not
already loaded: ``logging`` alone costs ~20 ms to import on a small Lambda, and is only
needed once something has gone wrong.
"""

from __future__ import annotations

import _thread
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from types import TracebackType

__all__ = [
    "forget_warnings",
    "get_logger",
    "guard",
    "report_failure",
    "start_daemon_thread",
    "warn_once",
]

LOGGER_NAME = "lifecycle_probe"

_warned: set[str] = set()
_warned_lock = _thread.allocate_lock()


def _new_lock_after_fork() -> None:
    # A fork taken while another thread held the lock would leave it held for ever in
    # the child; the child gets a fresh one.
    global _warned_lock
    _warned_lock = _thread.allocate_lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def get_logger() -> logging.Logger:
    """The package logger, ``lifecycle_probe`` (imports ``logging`` on first use)."""
    import logging

    return logging.getLogger(LOGGER_NAME)


def warn_once(key: str, message: str, *args: object) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    try:
        get_logger().warning(message, *args)
    except Exception:  # a broken logging set-up must not break the function
        pass


def report_failure(where: str, exc: BaseException) -> None:
    """Record that the probe failed in ``where``; the user's code carries on."""
    # One line per (place, exception type): a broken sink that fails on every
    # invocation must not flood the function's logs.
    warn_once(
        f"failure:{where}:{type(exc).__qualname__}",
        "lifecycle_probe: %s failed and was skipped (%s: %s); the function is unaffected",
        where,
        type(exc).__qualname__,
        exc,
    )


class guard:
    """Context manager that swallows and reports any ``Exception`` raised inside it."""

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # KeyboardInterrupt and SystemExit are the process's business, not ours.
        if isinstance(exc, Exception):
            report_failure(self.where, exc)
            return True
        return False


def start_daemon_thread(target: Callable[[], object], name: str) -> None:
    """Start one of the probe's own threads: a daemon ``threading.Thread``.

    ``threading`` takes the thread that first imports it for the main thread. Started with
    ``_thread`` before anything had imported ``threading``, a probe thread would import it
    itself (the OpenTelemetry SDK does) and become "MainThread": the interpreter would wait
    for it for ever at exit, ``asyncio.get_event_loop()`` in the real main thread would fail,
    and a forked child would hang at exit. So ``threading`` is imported here, on the thread
    that asks for the probe thread (the function's own, normally the main one; a runtime has
    always imported it already), and the probe thread is a daemon: never waited for at
    exit. The import costs ~3 ms once, on the first flush outside Lambda, never at INIT in
    Lambda, where ``logging`` (imported by every runtime client) has loaded it.
    """
    import threading

    threading.Thread(target=target, name=name, daemon=True).start()


def forget_warnings() -> None:
    """Forget which warnings were given (for tests that simulate a new process)."""
    with _warned_lock:
        _warned.clear()
