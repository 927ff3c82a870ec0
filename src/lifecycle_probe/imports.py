"""The import hook: run callbacks when a named module has finished importing.

A finder placed first on ``sys.meta_path`` lets the real finders locate the module, then
wraps only that module's loader so that the callbacks run right after the module's code
has executed. The module never sees the wrapper: its ``__loader__`` and
``__spec__.loader`` are set back to the real loader before its code runs. Callbacks are
guarded: a failing callback is reported and the import carries on unchanged.
"""

from __future__ import annotations

import _thread
import sys

from lifecycle_probe._safe import report_failure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

    Callback = Callable[[ModuleType], None]


class PostImportFinder:
    """Meta-path finder that calls back once a watched module's code has run."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {}

    def watch(self, name: str, callback: Callback) -> None:
        """Call ``callback(module)`` when module ``name`` finishes importing (once)."""
        callbacks = self._callbacks.setdefault(name, [])
        if callback not in callbacks:
            callbacks.append(callback)

    def fired(self, name: str) -> list[Callback]:
        """Take the callbacks of ``name``: its module has been imported."""
        return self._callbacks.pop(name, [])

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self._callbacks:
            return None
        spec = _find_with_later_finders(self, fullname, path, target)
        loader = None if spec is None else spec.loader
        # A namespace package (no loader) runs no code we could wait for: the watch stays.
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(loader, fullname, self)  # type: ignore[assignment]
        return spec


def _find_with_later_finders(
    me: object, fullname: str, path: Sequence[str] | None, target: ModuleType | None
) -> ModuleSpec | None:
    # Only the finders after this one: those before it have already said no.
    finders = list(sys.meta_path)
    after = finders[finders.index(me) + 1 :] if me in finders else finders
    for finder in after:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec: ModuleSpec | None = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _NotifyingLoader:
    """Executes the module with its real loader, then runs the callbacks."""

    def __init__(self, loader: Any, name: str, finder: PostImportFinder) -> None:
        self._loader = loader
        self._name = name
        self._finder = finder

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create: Callable[[ModuleSpec], ModuleType | None] | None = getattr(
            self._loader, "create_module", None
        )
        return None if create is None else create(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Give the module its real loader back before its code runs (pkgutil,
        # importlib.resources and friends look at it).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        # If this raises, the watch stays for a retried import; the error is the user's.
        self._loader.exec_module(module)
        for callback in self._finder.fired(self._name):
            try:
                callback(module)
            except Exception as exc:
                report_failure(f"post-import hook for {self._name}", exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


_finder: PostImportFinder | None = None
_finder_lock = _thread.allocate_lock()


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once module ``name`` is imported (now, if it already is).

    A module that is still executing (the caller is inside its import) cannot be watched:
    no finder sees it again, so nothing is registered for it.
    """
    module = sys.modules.get(name)
    if module is not None:
        if not _is_initialising(module):
            callback(module)
        return
    global _finder
    with _finder_lock:
        if _finder is None:
            _finder = PostImportFinder()
            sys.meta_path.insert(0, _finder)
        _finder.watch(name, callback)


def _is_initialising(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def handler_module_name(handler: str | None) -> str | None:
    """The module part of a Lambda handler string (``pkg/mod.fn`` -> ``pkg.mod``)."""
    if not handler or "." not in handler:
        return None
    return handler.rsplit(".", 1)[0].replace("/", ".")
