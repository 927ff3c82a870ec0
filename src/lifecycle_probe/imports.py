"""The import hook: run callbacks when a named module has finished importing.

A finder placed first on ``sys.meta_path`` lets the real finders locate the module, then
wraps only that module's loader so that the callbacks run right after the module's code
has executed. The module never sees the wrapper: its ``__loader__`` and
``__spec__.loader`` are set back to the real loader before its code runs. Callbacks are
guarded: a failing callback is reported and the import carries on unchanged.
"""

from __future__ import annotations

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
        """Call ``callback(module)`` when module ``name`` finishes importing."""
        self._callbacks.setdefault(name, []).append(callback)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        callbacks = self._callbacks.pop(fullname, None)
        if callbacks is None:
            return None
        spec = _find_with_other_finders(self, fullname, path, target)
        loader = None if spec is None else spec.loader
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(loader, fullname, callbacks)  # type: ignore[assignment]
        return spec


def _find_with_other_finders(
    me: object, fullname: str, path: Sequence[str] | None, target: ModuleType | None
) -> ModuleSpec | None:
    for finder in sys.meta_path:
        if finder is me:
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec: ModuleSpec | None = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _NotifyingLoader:
    """Executes the module with its real loader, then runs the callbacks."""

    def __init__(self, loader: Any, name: str, callbacks: list[Callback]) -> None:
        self._loader = loader
        self._name = name
        self._callbacks = callbacks

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
        self._loader.exec_module(module)
        for callback in self._callbacks:
            try:
                callback(module)
            except Exception as exc:
                report_failure(f"post-import hook for {self._name}", exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


_finder: PostImportFinder | None = None


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once module ``name`` is imported (now, if it already is)."""
    module = sys.modules.get(name)
    if module is not None and not _is_initialising(module):
        callback(module)
        return
    global _finder
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
