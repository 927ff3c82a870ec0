"""Stale-connection tracking: reuse of a connection across a freeze (DESIGN.md §2).

:func:`install_connection_tracking` only registers post-import hooks. Nothing is patched,
and ``wrapt`` is not imported, until the client library itself is imported; then the
driver module of this package patches it.
"""

from __future__ import annotations

import _thread

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.tracking import set_stale_idle_s, stale_idle_s
from lifecycle_probe.imports import when_imported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "install_connection_tracking",
    "reusable",
    "set_stale_idle_s",
    "stale_idle_s",
    "track_client",
]

if TYPE_CHECKING:
    from lifecycle_probe.connections.reuse import reusable


def __getattr__(name: str) -> object:
    # The safe-reuse helper is for user code; loading it here would add to INIT.
    if name == "reusable":
        from lifecycle_probe.connections.reuse import reusable

        return reusable
    raise AttributeError(f"module 'lifecycle_probe.connections' has no attribute {name!r}")


_installed = False
_lock = _thread.allocate_lock()


def _track_psycopg2(module: ModuleType) -> None:
    try:
        from lifecycle_probe.connections import _psycopg2

        _psycopg2.patch(module)
    except Exception as exc:
        report_failure("psycopg2 connection tracking", exc)


def _track_pymysql(module: ModuleType) -> None:
    try:
        from lifecycle_probe.connections import _pymysql

        _pymysql.patch(module)
    except Exception as exc:
        report_failure("pymysql connection tracking", exc)


def _track_redis(module: ModuleType) -> None:
    try:
        from lifecycle_probe.connections import _redis

        _redis.patch(module)
    except Exception as exc:
        report_failure("redis connection tracking", exc)


def _track_psycopg(module: ModuleType) -> None:
    try:
        from lifecycle_probe.connections import _psycopg

        _psycopg.patch(module)
    except Exception as exc:
        report_failure("psycopg connection tracking", exc)


def _track_urllib3(module: ModuleType) -> None:
    try:
        from lifecycle_probe.connections import _urllib3

        _urllib3.patch(module)
    except Exception as exc:
        report_failure("urllib3 connection tracking", exc)


_TRACKERS = {
    "psycopg2": _track_psycopg2,
    "psycopg": _track_psycopg,
    "pymysql": _track_pymysql,
    "redis": _track_redis,
    # HTTP keep-alive pools: boto3/botocore and requests go through urllib3.
    "urllib3": _track_urllib3,
}


def track_client(module: ModuleType) -> None:
    """Patch a just-imported client library (``psycopg2``, ``pymysql`` or ``redis``).

    For post-import callbacks: they run while the module is still marked as importing,
    when ``when_imported`` could no longer register anything for it.
    """
    tracker = _TRACKERS.get(module.__name__)
    if tracker is not None:
        tracker(module)


def install_connection_tracking(stale_idle_s: float) -> None:
    """Track the known clients' connections (``_TRACKERS``) once they are imported.

    Idempotent: a later call only changes the idle time after which a reuse that worked
    is reported as a ``risk``. Never raises.
    """
    global _installed
    try:
        set_stale_idle_s(stale_idle_s)
        with _lock:
            if _installed:
                return
            _installed = True
        for name, tracker in _TRACKERS.items():
            when_imported(name, tracker)
    except Exception as exc:
        report_failure("connection tracking install", exc)
