"""Leaked request state: module globals of the function's own code rebound to the event's values.

A global survives into every later invocation of the environment; one that an invocation
rebinds to something taken from its event (``current_order_id = event["orderId"]``) leaks
that request's state into the next ones. After each invocation the probe looks at the
module-level names of the function's own modules (files under ``LAMBDA_TASK_ROOT``, not
site-packages or layers) that changed since the last look, and asks whether their value is
the event, a part of it, or one of its ids, strings or numbers, also inside containers and
attributes of the function's own simple objects. A lazy cache filled from elsewhere, a
counter, a compiled regex or an SDK client is not taken from the event and is not a leak.

Only names and the invocation that first leaked them are reported, never a value.

Cost, bounded per invocation: at most :data:`MAX_GLOBALS` globals compared (by identity);
the event is read only when some global changed, at most :data:`MAX_EVENT_NODES` of its
nodes, and strings longer than :data:`MAX_STRING` are not compared (a 6 MB body costs
nothing more than a small one); a changed value is searched to depth :data:`MAX_DEPTH`,
at most :data:`MAX_VALUE_NODES` nodes.
"""

from __future__ import annotations

import os
import sys
from itertools import chain, islice

from lifecycle_probe.config import variable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = ["MAX_EVENT_NODES", "EventValues", "LeakWatch", "task_root_of"]

MAX_GLOBALS = 5000
MAX_EVENT_NODES = 256
MAX_VALUE_NODES = 256
MAX_DEPTH = 4
MAX_STRING = 1024
# Strings shorter and integers smaller than these are too common to tell anything
# (a counter at 3, a flag "on"): only ids, names and amounts are compared.
MIN_STRING = 3
MIN_NUMBER = 1000

_CONTAINERS = (dict, list, tuple, set, frozenset)
_SKIPPED_PATHS = ("/site-packages/", "/dist-packages/", "/opt/")


class EventValues:
    """What of an event a global could have been given: its containers, strings, numbers."""

    __slots__ = ("containers", "values", "visited")

    def __init__(self, event: Any) -> None:
        self.containers: set[int] = set()
        self.values: set[Any] = set()
        self.visited = 0
        stack: list[tuple[Any, int]] = [(event, 0)]
        while stack and self.visited < MAX_EVENT_NODES:
            node, depth = stack.pop()
            self.visited += 1
            kind = type(node)
            if kind in _CONTAINERS:
                self.containers.add(id(node))
                if depth >= 16:
                    continue
                # No more children than the bound can still visit: a list of a million
                # records costs as much as one of a few hundred.
                room = max(0, MAX_EVENT_NODES - self.visited - len(stack))
                children = node.values() if kind is dict else node
                stack.extend((child, depth + 1) for child in islice(children, room))
            elif _telling(node):
                self.values.add(node)

    def holds(self, value: Any, task_modules: frozenset[str]) -> bool:
        """Whether ``value`` is, or holds, something of the event."""
        if not self.containers and not self.values:
            return False
        budget = MAX_VALUE_NODES
        stack: list[tuple[Any, int]] = [(value, 0)]
        while stack and budget > 0:
            node, depth = stack.pop()
            budget -= 1
            if id(node) in self.containers:
                return True
            kind = type(node)
            if kind in _CONTAINERS:
                if depth < MAX_DEPTH:
                    children = chain(node.keys(), node.values()) if kind is dict else node
                    room = max(0, budget - len(stack))
                    stack.extend((child, depth + 1) for child in islice(children, room))
            elif _telling(node):
                if node in self.values:
                    return True
            elif depth < MAX_DEPTH and _own_simple_object(node, task_modules):
                room = max(0, budget - len(stack))
                stack.extend((child, depth + 1) for child in islice(vars(node).values(), room))
        return False


def _telling(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return MIN_STRING <= len(value) <= MAX_STRING
    if kind is int:
        return bool(abs(value) >= MIN_NUMBER)
    return False


def _own_simple_object(value: Any, task_modules: frozenset[str]) -> bool:
    # Attributes of the function's own objects (and namespaces) are looked into; an SDK
    # client's or a library's objects are not: their attributes are not request state.
    kind = type(value)
    module = getattr(kind, "__module__", None)
    if module not in task_modules and module != "types":
        return False
    try:
        attributes = vars(value)
    except TypeError:
        return False
    return isinstance(attributes, dict)


class LeakWatch:
    """Watches the function's own module globals across the invocations of an environment."""

    def __init__(self, task_root: str | None) -> None:
        self.task_root = (task_root or "").rstrip("/") + "/" if task_root else None
        self._modules: list[ModuleType] = []
        self._module_names: frozenset[str] = frozenset()
        self._seen_modules = -1
        # (module, name) -> id of the value at the last look.
        self._ids: dict[tuple[str, str], int] = {}
        # module name -> (its global names, ids of their values) at the last look.
        self._shapes: dict[str, tuple[tuple[str, ...], list[int]]] = {}
        # (module, name) -> invocation seq it first leaked in; per environment.
        self._reported: dict[tuple[str, str], int] = {}
        self._environment_id: str | None = None

    def _function_modules(self) -> list[ModuleType]:
        if len(sys.modules) != self._seen_modules:
            self._seen_modules = len(sys.modules)
            modules = []
            for module in list(sys.modules.values()):
                path = getattr(module, "__file__", None)
                if not isinstance(path, str) or self.task_root is None:
                    continue
                if path.startswith(self.task_root) and not any(
                    part in path for part in _SKIPPED_PATHS
                ):
                    modules.append(module)
            self._modules = modules
            self._module_names = frozenset(m.__name__ for m in modules)
        return self._modules

    def _changed(self) -> list[tuple[str, str, Any]]:
        changed: list[tuple[str, str, Any]] = []
        seen = 0
        ids = self._ids
        shapes = self._shapes
        for module in self._function_modules():
            name_of_module = module.__name__
            namespace = vars(module)
            # The usual case, no global rebound since the last look: the same names bound
            # to the same objects, compared in C (names and ids of the values, never the
            # values themselves, which the watch must not keep alive). Only a module
            # that changed is gone through name by name, as before.
            shape = (tuple(namespace), list(map(id, namespace.values())))
            seen += len(shape[0])
            if seen <= MAX_GLOBALS and shapes.get(name_of_module) == shape:
                continue
            seen -= len(shape[0])
            shapes.pop(name_of_module, None)
            for name, value in list(namespace.items()):
                seen += 1
                if seen > MAX_GLOBALS:
                    return changed
                key = (name_of_module, name)
                value_id = id(value)
                if ids.get(key) != value_id:
                    if key in ids:
                        changed.append((name_of_module, name, value))
                    ids[key] = value_id
            # Kept only for a module gone through whole: a skipped one must be one whose
            # every global's id is noted.
            shapes[name_of_module] = shape
        return changed

    def baseline(self) -> None:
        """Note the globals as they are now (before the environment's first invocation)."""
        self._changed()

    def after_invocation(self, event: Any, seq: int, environment_id: str) -> list[tuple[str, str]]:
        """The globals this invocation first leaked its event into: (module, name) pairs."""
        if environment_id != self._environment_id:
            # A new environment (a fork, a restore): its own report, once per name.
            self._environment_id = environment_id
            self._reported = {}
        changed = self._changed()
        if not changed:
            return []
        values = EventValues(event)
        leaked = []
        for module, name, value in changed:
            key = (module, name)
            if key in self._reported or name.startswith("__"):
                continue
            if values.holds(value, self._module_names):
                self._reported[key] = seq
                leaked.append(key)
        return leaked


def task_root_of(handler: Any) -> str | None:
    """Where the function's own code lives: ``LAMBDA_TASK_ROOT``, else the handler's folder."""
    root = variable("LAMBDA_TASK_ROOT")
    if root:
        return root
    module = sys.modules.get(getattr(handler, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    return os.path.dirname(path) if isinstance(path, str) else None
