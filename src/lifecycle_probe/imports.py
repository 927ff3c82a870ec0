"""The import hooks: post-import callbacks, and the import tree of INIT.

Every import goes through ``importlib._bootstrap._find_and_load``, which the interpreter
looks up afresh on each import, so wrapping that one function sees every module (source,
bytecode, C extension, built-in, namespace package) with the time to find and to load it,
nested imports inside. That one wrapper serves both hooks:

- Post-import callbacks run when the machinery's own ``_find_and_load`` returns the
  watched module whole (a circular import's half-made module waits for the end of its
  import). The module never sees the probe (its loader is its own), and no finder of the
  probe's sits on ``sys.meta_path`` to be asked about every import. Callbacks are guarded:
  a failing callback is reported and the import carries on unchanged. A module loaded
  without the machinery's ``_find_and_load`` (``importlib.util.LazyLoader``, a hand-made
  ``spec.loader.exec_module``) is not seen.
- While tracing, a per-thread stack turns the calls into a tree with cumulative and self
  time (a callback's time counts in its module's import); threads importing at once keep
  separate stacks. A failing import is recorded with its error type and the error
  propagates unchanged.

The wrapper is in place while a callback waits or tracing runs, and taken out when neither
does (a disabled probe leaves the machinery as it found it). This is CPython's private
import machinery (stable from 3.4 through 3.13). If it is not there, imports are neither
traced nor watched, with one warning: the probe's other signals do not depend on it.
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
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

    Callback = Callable[[ModuleType], None]
    # importlib._bootstrap._find_and_load(name, import_), and the probe's wrapper of it
    FindAndLoad = Callable[[str, Any], ModuleType]
    # An import as the tracer saw it: ImportRecord's fields, in order, with the module
    # file's path (``__spec__.origin``, whatever the loader set) in place of its origin.
    Seen = tuple[str, int, int, int, int, int | None, object, bool, str | None]

__all__ = [
    "active_tracer",
    "handler_module_name",
    "origin_of",
    "remove_post_import_hooks",
    "start_import_tracing",
    "stop_import_tracing",
    "when_imported",
]


# -- the one hook: importlib._bootstrap._find_and_load ----------------------------------------
# The callbacks waiting for a module, by its name; the tracer, while tracing; the probe's
# wrapper, while the machinery calls it (it keeps the function it wraps as __wrapped__).
_callbacks: dict[str, list[Callback]] = {}
_active: ImportTracer | None = None
_hook: FindAndLoad | None = None
# Guards the callbacks and the hook's placement. Re-entrant: a signal handler or a
# finaliser may import a watched module on a thread that holds it.
_lock = _thread.RLock()


def _make_hook(original: FindAndLoad) -> FindAndLoad:
    def _find_and_load(name: str, import_: Any) -> ModuleType:
        # What the interpreter calls for each import while the hook is in place. The
        # function it wraps is held here, not in a global: the module's globals may be
        # reset under it (importlib.reload) while the machinery still calls it.
        tracer = _active
        if tracer is not None:
            return tracer.traced(name, import_, original)
        return _load(name, import_, original)

    _find_and_load.__wrapped__ = original  # type: ignore[attr-defined]
    return _find_and_load


def _load(name: str, import_: Any, original: FindAndLoad) -> ModuleType:
    # An import the tracer does not record: the machinery's own, then its callbacks.
    module = original(name, import_)
    if name in _callbacks:  # (after the import: a callback of its package may watch it)
        _notify(name, module)
    return module


def _notify(name: str, module: ModuleType) -> None:
    """Run the callbacks waiting for ``module``, imported just now (never raises).

    The machinery has released the module's import lock by now: another thread that
    imports the module while the callbacks run gets it before they are done, as it would
    a client library loaded before the probe was (whose patch comes with ``install()``).
    Holding the lock through the callbacks would make them part of the import for every
    other thread: a callback's own imports could then deadlock with theirs.
    """
    if _is_initialising(module):
        # Asked for again inside its own import (a circular import): the callbacks wait
        # for the end of that import.
        return
    with _lock:
        waiting = _callbacks.pop(name, ())
    for callback in waiting:
        _run_hook(callback, module, name)
    if not _callbacks and _active is None:
        with _lock:
            _unhook_if_idle()


def _bootstrap_module() -> ModuleType | None:
    # The interpreter calls _find_and_load on its frozen bootstrap module, which the
    # importlib package (when imported) also registers as importlib._bootstrap.
    return sys.modules.get("_frozen_importlib") or sys.modules.get("importlib._bootstrap")


def _hook_imports() -> bool:
    """Put the hook in place (call with the lock held); False, with one warning, where
    the machinery has no ``_find_and_load``."""
    global _hook
    bootstrap = _bootstrap_module()
    current = getattr(bootstrap, "_find_and_load", None)
    if bootstrap is None or current is None:
        warn_once(
            "imports:unsupported",
            "lifecycle_probe: this interpreter has no _frozen_importlib._find_and_load; "
            "imports are neither traced nor watched",
        )
        return False
    if _hook is not None and (current is _hook or _still_called(_hook, current, bootstrap)):
        return True
    if getattr(current, "__globals__", None) is globals():
        # This module's own hook, made before the module was reloaded: it reads the same
        # globals, so it serves as it is (wrapping it would trace every import twice).
        _hook = current
        return True
    # (another library's wrapper, or another copy of the probe's, stays inside ours)
    _hook = _make_hook(current)
    setattr(bootstrap, "_find_and_load", _hook)  # noqa: B010 - private module
    return True


def _still_called(hook: FindAndLoad, current: FindAndLoad, bootstrap: ModuleType) -> bool:
    # Whether the machinery still reaches ``hook``, which is not ``current`` (the function
    # in place). Not when ``current`` is the machinery's own, or one ``hook`` wraps: a tool
    # that wrapped the machinery while the hook went in around it has put back what it had
    # found. Otherwise another wrapper sits on top of the hook, as far as can be told, and
    # calls it.
    if getattr(current, "__globals__", None) is vars(bootstrap):
        return False
    below: Any = hook
    for _ in range(32):
        below = getattr(below, "__wrapped__", None)
        if below is None:
            return True
        if below is current:
            return False
    return True


def _unhook_if_idle() -> None:
    # Neither a callback waits nor does tracing run: give the machinery its own function
    # back, unless another wrapper has since been put around ours (ours then passes on,
    # and is used again when wanted: wrapping it anew would make it run twice).
    global _hook
    hook = _hook
    if _active is not None or _callbacks or hook is None:
        return
    bootstrap = _bootstrap_module()
    if getattr(bootstrap, "_find_and_load", None) is hook:
        original = getattr(hook, "__wrapped__")  # noqa: B009 - set by _make_hook
        setattr(bootstrap, "_find_and_load", original)  # noqa: B010 - private module
        _hook = None


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once module ``name`` is imported (now, if it already is).

    A module that is still executing (the caller is inside its import) cannot be watched:
    its import began before the hook could see it, so nothing is registered for it.
    """
    module = sys.modules.get(name)
    if module is not None:
        if not _is_initialising(module):
            _run_hook(callback, module, name)
        return
    with _lock:
        if not _hook_imports():
            return
        callbacks = _callbacks.setdefault(name, [])
        if callback not in callbacks:
            callbacks.append(callback)
    # An import of ``name`` that finished on another thread since the look above did not
    # see the watch: call back now.
    module = sys.modules.get(name)
    if module is not None:
        _notify(name, module)


def remove_post_import_hooks() -> None:
    """Drop every callback still waiting; the hook goes too unless tracing runs.

    A disabled probe leaves no import hook behind (README "Configuration"), even when
    importing ``probe`` had already put one in place. A later ``when_imported`` puts the
    hook back in place.
    """
    with _lock:
        _callbacks.clear()
        _unhook_if_idle()


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

    def after_fork_in_child(self) -> None:
        """A forked child starts with fresh locks and no INIT imports of its own yet."""
        self._lock = _thread.allocate_lock()
        self._local = _thread._local()
        self._init, self._later = [], []

    def traced(self, name: str, import_: Any, original: FindAndLoad) -> ModuleType:
        """Import ``name`` with ``original`` (and run its callbacks), timing it."""
        local = self._local
        # The probe's own import (in_probe_work, inline: see probe_threads)? Until the
        # registry is loaded, by the first thread or block of the probe's, there is none:
        # so that INIT, where install() alone needs no registry, does not import it.
        # (getattr: another thread may be running the registry's module body right now)
        registry = sys.modules.get(_REGISTRY)
        work_depth = None if registry is None else getattr(registry, "work_depth", None)
        if work_depth is None:
            if name == _REGISTRY:  # its first import (a post-import hook's): the probe's
                return _load(name, import_, original)
        elif work_depth.__dict__.get("depth", _OUTSIDE)[0] > 0:
            return _load(name, import_, original)
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
            return _load(name, import_, original)
        package = name.rpartition(".")[0]
        if package and package not in sys.modules:
            # The machinery would import the package from inside this import, nesting it
            # under its own submodule: import it first, as the import it really is.
            self.traced(package, import_, original)
            if name in sys.modules:  # importing the package imported this one too
                return _load(name, import_, original)
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
            # (_load inline: one frame of the probe's fewer in the traceback of an error
            # raised by the module's code)
            module = original(name, import_)
            if name in _callbacks:  # (after the import: a callback of its package may watch it)
                _notify(name, module)
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


def active_tracer() -> ImportTracer | None:
    """The import tracer of this process, if tracing was started."""
    return _active


def start_import_tracing(during_init: Callable[[], bool]) -> ImportTracer | None:
    """Start tracing imports (once per process); the tracer, or None if unsupported."""
    global _active
    tracer = ImportTracer(during_init)  # (before the lock: nothing is imported under it)
    with _lock:
        if _active is None and _hook_imports():
            _active = tracer
        return _active


def stop_import_tracing() -> None:
    """Stop tracing imports and forget what was recorded (a disabled probe, tests); the
    hook goes too unless a callback waits."""
    global _active
    with _lock:
        _active = None
        _unhook_if_idle()


def _after_fork_in_child() -> None:
    # The lock may have been held by a thread the child does not have.
    global _lock
    _lock = _thread.RLock()
    if _active is not None:
        _active.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _run_hook(callback: Callback, module: ModuleType, name: str) -> None:
    # What a hook imports (the tracking code, wrapt) is the probe's, not the function's:
    # its time stays in the watched module's import, but it gets no span of its own.
    try:
        from lifecycle_probe.probe_threads import probe_work

        with probe_work():
            callback(module)
    except Exception as exc:
        report_failure(f"post-import hook for {name}", exc)
