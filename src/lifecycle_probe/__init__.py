"""lifecycle_probe: make the AWS Lambda execution lifecycle visible.

``@probe`` records every invocation's start type (cold, warm, provisioned, proactive,
restored), its place in the environment's life and the environment's INIT;
``install()`` puts the hooks in place as early as possible; ``current()`` tells the
handler where it stands, as a :class:`LifecycleFacts`.

Names are loaded on first use: importing the package costs next to nothing at INIT.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lifecycle_probe.decorator import probe
    from lifecycle_probe.facts import current
    from lifecycle_probe.installation import install
    from lifecycle_probe.records import LifecycleFacts

    # Computed on first access by __getattr__ below, whose return type (object) a type
    # checker would otherwise give it: declared here for them only.
    __version__: str

__all__ = ["LifecycleFacts", "__version__", "current", "install", "probe"]

_LAZY = {
    "LifecycleFacts": "lifecycle_probe.records",
    "current": "lifecycle_probe.facts",
    "install": "lifecycle_probe.installation",
    "probe": "lifecycle_probe.decorator",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        # __import__ rather than importlib.import_module: the importlib package (and the
        # warnings module it pulls in) would be the costliest import on the INIT path.
        import sys

        __import__(_LAZY[name])
        value = getattr(sys.modules[_LAZY[name]], name)
        globals()[name] = value
        return value
    if name == "__version__":
        # importlib.metadata is slow to import; only pay for it when someone asks.
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("lifecycle-probe")
        except PackageNotFoundError:
            # A source tree on sys.path with no installed metadata has no version to give.
            # AttributeError is what getattr(), hasattr() and tools probing __version__
            # expect of a module without one; PackageNotFoundError would escape them.
            raise AttributeError(
                "module 'lifecycle_probe' has no attribute '__version__' "
                "(no installed metadata for the lifecycle-probe distribution)"
            ) from None
    raise AttributeError(f"module 'lifecycle_probe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
