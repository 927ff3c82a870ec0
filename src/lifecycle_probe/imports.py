"""The import hooks: post-import callbacks, and the import tree of INIT.

A finder placed first on ``sys.meta_path`` lets the real finders locate the module, then
wraps only that module's loader so that the callbacks run right after the module's code
has executed. The module never sees the wrapper: its ``__loader__`` and
``__spec__.loader`` are set back to the real loader before its code runs. Callbacks are
guarded: a failing callback is reported and the import carries on unchanged.

Every import goes through ``importlib._bootstrap._find_and_load``, which the interpreter
looks up afresh on each import, so wrapping that one function sees every module (source,
bytecode, C extension, built-in, namespace package) with the time to find and to load it,
nested imports inside. A per-thread stack turns the calls into a tree with cumulative and
self time; threads importing at once keep separate stacks. A failing import is recorded
with its error type and the error propagates unchanged.

This is CPython's private import machinery (stable from 3.4 through 3.13). If it is not
there, import tracing is switched off with one warning: nothing else depends on it.
"""

from __future__ import annotations

import _thread
import os
import sys
import time

from lifecycle_probe._safe import report_failure, warn_once
from lifecycle_probe.config import variable
from lifecycle_probe.records import (
    ORIGIN_FUNCTION,
    ORIGIN_LAYER,
    ORIGIN_RUNTIME,
    ORIGIN_SITE_PACKAGES,
    ImportRecord,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

    Callback = Callable[[ModuleType], None]
    # An import as the tracer saw it: ImportRecord's fields, in order, with the module
    # file's path (``__spec__.origin``, whatever the loader set) in place of its origin.
    Seen = tuple[str, int, int, int, int, int | None, object, bool, str | None]

__all__ = [
    "PostImportFinder",
    "active_tracer",
    "handler_module_name",
    "origin_of",
    "remove_post_import_hooks",
    "start_import_tracing",
    "stop_import_tracing",
    "when_imported",
]


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
            _run_hook(callback, module, self._name)

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
            _run_hook(callback, module, name)
        return
    global _finder
    with _finder_lock:
        if _finder is None:
            _finder = PostImportFinder()
            sys.meta_path.insert(0, _finder)
        _finder.watch(name, callback)


def remove_post_import_hooks() -> None:
    """Take the finder off ``sys.meta_path`` and drop every callback still waiting.

    A disabled probe leaves no import hook behind (README "Configuration"), even when
    importing ``probe`` had already put one in place. A later ``when_imported`` puts a
    new finder in place.
    """
    global _finder
    with _finder_lock:
        finder, _finder = _finder, None
        if finder is None:
            return
        finder._callbacks.clear()
        # By identity: a finder is no value to compare, and another library's may be equal.
        sys.meta_path[:] = [f for f in sys.meta_path if f is not finder]


def _is_initialising(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def handler_module_name(handler: str | None) -> str | None:
    """The module part of a Lambda handler string (``pkg/mod.fn`` -> ``pkg.mod``)."""
    if not handler or "." not in handler:
        return None
    return handler.rsplit(".", 1)[0].replace("/", ".")


# -- the import tree ------------------------------------------------------------------------
# Enough for the largest functions; past it, imports are counted but not kept.
MAX_IMPORTS = 10_000

# The probe's own-thread registry, read on every import once it is loaded (see traced).
_REGISTRY = "lifecycle_probe.probe_threads"
_OUTSIDE = (0,)  # (probe_threads.OUTSIDE: a thread that never entered a block)


def origin_of(path: str | None, task_root: str | None) -> str:
    """Classify a module's file: the function's code, a layer, site-packages or the runtime."""
    if not path:
        return ORIGIN_RUNTIME  # built-in or frozen: part of the interpreter
    if task_root and path.startswith(task_root.rstrip("/") + "/"):
        return ORIGIN_FUNCTION
    if path.startswith("/opt/"):
        return ORIGIN_LAYER
    if "/site-packages/" in path or "/dist-packages/" in path:
        return ORIGIN_SITE_PACKAGES
    return ORIGIN_RUNTIME


def _bootstrap_module() -> ModuleType | None:
    # The interpreter calls _find_and_load on its frozen bootstrap module, which the
    # importlib package (when imported) also registers as importlib._bootstrap.
    return sys.modules.get("_frozen_importlib") or sys.modules.get("importlib._bootstrap")


class ImportTracer:
    """Records imports as a tree. ``during_init`` tells it which phase an import belongs to."""

    def __init__(self, during_init: Callable[[], bool]) -> None:
        self._during_init = during_init
        self._local = _thread._local()
        self._ids = iter(range(1, sys.maxsize))
        self._lock = _thread.allocate_lock()
        self._init: list[Seen] = []
        self._later: list[Seen] = []
        self.dropped = 0
        self.started_ns = time.time_ns()
        self._task_root = variable("LAMBDA_TASK_ROOT")
        self._original: Callable[[str, Any], ModuleType] | None = None

    def after_fork_in_child(self) -> None:
        """A forked child starts with fresh locks and no INIT imports of its own yet."""
        self._lock = _thread.allocate_lock()
        self._local = _thread._local()
        self._init, self._later = [], []

    def start(self) -> bool:
        """Wrap the import machinery; False (with a warning) where it cannot be."""
        bootstrap = _bootstrap_module()
        original = getattr(bootstrap, "_find_and_load", None)
        if bootstrap is None or original is None:
            warn_once(
                "imports:unsupported",
                "lifecycle_probe: this interpreter has no _frozen_importlib._find_and_load; "
                "imports are not traced",
            )
            return False
        if getattr(original, "__lifecycle_probe_tracer__", None) is not None:
            return True  # another tracer is already in place
        self._original = original
        tracer = self

        def _find_and_load(name: str, import_: Any) -> ModuleType:
            return tracer.traced(name, import_)

        _find_and_load.__lifecycle_probe_tracer__ = self  # type: ignore[attr-defined]
        _find_and_load.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(bootstrap, "_find_and_load", _find_and_load)  # noqa: B010 - private module
        return True

    def stop(self) -> None:
        """Put the import machinery back as it was."""
        bootstrap = _bootstrap_module()
        current = getattr(bootstrap, "_find_and_load", None)
        if (
            self._original is not None
            and getattr(current, "__lifecycle_probe_tracer__", None) is self
        ):
            setattr(bootstrap, "_find_and_load", self._original)  # noqa: B010 - private module

    def traced(self, name: str, import_: Any) -> ModuleType:
        """Import ``name`` with the original machinery, timing it."""
        original = self._original
        assert original is not None
        local = self._local
        # The probe's own import (in_probe_work, inline: see probe_threads)? Until the
        # registry is loaded, by the first thread or block of the probe's, there is none:
        # so that INIT, where install() alone needs no registry, does not import it.
        # (getattr: another thread may be running the registry's module body right now)
        registry = sys.modules.get(_REGISTRY)
        work_depth = None if registry is None else getattr(registry, "work_depth", None)
        if work_depth is None:
            if name == _REGISTRY:  # its first import (a post-import hook's): the probe's
                return original(name, import_)
        elif work_depth.__dict__.get("depth", _OUTSIDE)[0] > 0:
            return original(name, import_)
        try:
            stack: list[list[int]] = local.stack
        except AttributeError:
            stack = local.stack = []
        loaded = sys.modules.get(name)
        if loaded is not None and not getattr(
            getattr(loaded, "__spec__", None), "_initializing", False
        ):
            # importlib.import_module of a module already imported still comes through
            # here: nothing is imported, nothing to record.
            return original(name, import_)
        package = name.rpartition(".")[0]
        if package and package not in sys.modules:
            # The machinery would import the package from inside this import, nesting it
            # under its own submodule: import it first, as the import it really is.
            self.traced(package, import_)
            if name in sys.modules:  # importing the package imported this one too
                return original(name, import_)
        # [import id, time spent in nested imports]
        frame = [next(self._ids), 0]
        parent_id = stack[-1][0] if stack else None
        stack.append(frame)
        # Wall clock for when, the performance counter for how long: a clock step (NTP,
        # a SnapStart restore) must never make a duration negative.
        start_ns = time.time_ns()
        started = time.perf_counter_ns()
        error_type = None
        try:
            module = original(name, import_)
        except BaseException as exc:
            error_type = type(exc).__qualname__
            raise
        finally:
            elapsed = time.perf_counter_ns() - started
            stack.pop()
            if stack:
                stack[-1][1] += elapsed
            # Inline, not a method: this runs for every import of INIT, where each Python
            # call shows. Never let the bookkeeping break an import.
            try:
                during_init = self._during_init()
                # The module file's path now, its origin when the record is taken (after
                # the response): INIT pays for a tuple per import, no more.
                spec = getattr(sys.modules.get(name), "__spec__", None)
                seen = (
                    name,
                    start_ns,
                    start_ns + elapsed,
                    elapsed - frame[1],
                    frame[0],
                    parent_id,
                    getattr(spec, "origin", None),
                    during_init,
                    error_type,
                )
                with self._lock:
                    if len(self._init) + len(self._later) >= MAX_IMPORTS:
                        self.dropped += 1
                    elif during_init:
                        self._init.append(seen)
                    else:
                        self._later.append(seen)
            except Exception:
                pass
        return module

    def take_init(self) -> tuple[ImportRecord, ...]:
        """The imports of INIT so far, in the order they finished; they are handed over once."""
        with self._lock:
            taken, self._init = self._init, []
        return _records(taken, self._task_root)

    @property
    def has_later(self) -> bool:
        """True when imports happened after INIT that were not taken yet (no lock: a hint)."""
        return bool(self._later)

    def take_later(self) -> tuple[ImportRecord, ...]:
        """Imports after INIT (during invocations) since the last call."""
        with self._lock:
            taken, self._later = self._later, []
        return _records(taken, self._task_root)


def _records(seen: list[Seen], task_root: str | None) -> tuple[ImportRecord, ...]:
    records = []
    for module, start_ns, end_ns, self_ns, import_id, parent, path, init, error in seen:
        try:
            origin = origin_of(path if isinstance(path, str) else None, task_root)
        except Exception:
            # A loader's odd origin (a str subclass whose methods raise): that import is
            # left out, as one whose bookkeeping failed always was, not the whole tree.
            continue
        records.append(
            ImportRecord(
                module=module,
                start_ns=start_ns,
                end_ns=end_ns,
                self_ns=self_ns,
                import_id=import_id,
                parent_id=parent,
                origin=origin,
                during_init=init,
                error_type=error,
            )
        )
    return tuple(records)


_active: ImportTracer | None = None


def active_tracer() -> ImportTracer | None:
    """The import tracer of this process, if tracing was started."""
    return _active


def start_import_tracing(during_init: Callable[[], bool]) -> ImportTracer | None:
    """Start tracing imports (once per process); the tracer, or None if unsupported."""
    global _active
    if _active is None:
        tracer = ImportTracer(during_init)
        if not tracer.start():
            return None
        _active = tracer
    return _active


def _after_fork_in_child() -> None:
    if _active is not None:
        _active.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def stop_import_tracing() -> None:
    """Stop tracing imports and forget what was recorded (a disabled probe, tests)."""
    global _active
    if _active is not None:
        _active.stop()
        _active = None


def _run_hook(callback: Callback, module: ModuleType, name: str) -> None:
    # What a hook imports (the tracking code, wrapt) is the probe's, not the function's:
    # its time stays in the watched module's import, but it gets no span of its own.
    try:
        from lifecycle_probe.probe_threads import probe_work

        with probe_work():
            callback(module)
    except Exception as exc:
        report_failure(f"post-import hook for {name}", exc)
