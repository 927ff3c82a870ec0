"""Stale-connection tracking: reuse of a connection across a freeze (DESIGN.md §2).

For users: :class:`reusable`, a cached connection checked once per invocation and remade
when dead. The tracking itself is put in place by ``lifecycle_probe.install()`` and
``@probe`` through ``lifecycle_probe.installation.install_connection_tracking``, which
patches each client library with the driver module of its name (``_psycopg2``, ...) once
the library is imported. This package imports nothing until ``reusable`` is asked for.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lifecycle_probe.connections.reuse import reusable

__all__ = ["reusable"]


def __getattr__(name: str) -> object:
    # The safe-reuse helper is for user code; loading it here would add to INIT.
    if name == "reusable":
        from lifecycle_probe.connections.reuse import reusable

        return reusable
    raise AttributeError(f"module 'lifecycle_probe.connections' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
