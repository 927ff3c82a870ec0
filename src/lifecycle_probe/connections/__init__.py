"""Stale-connection tracking: reuse of a connection across a freeze (DESIGN.md §2).

:func:`install_connection_tracking` only registers post-import hooks. Nothing is patched,
and ``wrapt`` is not imported, until the client library itself is imported; then the
driver module of this package patches it.
"""

from __future__ import annotations

import _thread
from importlib import import_module

from lifecycle_probe._safe import report_failure
from lifecycle_probe.connections.tracking import set_stale_idle_s, stale_idle_s
from lifecycle_probe.imports import when_imported
from lifecycle_probe.installation import TRACKED_CLIENTS

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


def track_client(module: ModuleType) -> None:
    """Patch a just-imported client library (one of ``TRACKED_CLIENTS``).

    Each client's patcher is this package's module of the same name with a leading
    underscore (``psycopg2`` -> ``_psycopg2``). For post-import callbacks: they run while
    the module is still marked as importing, when ``when_imported`` could no longer
    register anything for it.
    """
    name = module.__name__
    if name not in TRACKED_CLIENTS:
        return
    try:
        patcher = import_module(f"lifecycle_probe.connections._{name}")
        patcher.patch(module)
    except Exception as exc:
        report_failure(f"{name} connection tracking", exc)


def install_connection_tracking(stale_idle_s: float) -> None:
    """Track the known clients' connections (``TRACKED_CLIENTS``) once they are imported.

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
        for name in TRACKED_CLIENTS:
            when_imported(name, track_client)
    except Exception as exc:
        report_failure("connection tracking install", exc)
