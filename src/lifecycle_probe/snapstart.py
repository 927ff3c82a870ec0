"""SnapStart hazards: state in the snapshot that every restored environment shares.

A SnapStart function's INIT runs once, when a version is published; every environment is
then restored from the same memory snapshot. Whatever INIT kept in a global is the same in
all of them, and some of it must not be:

- ``connection``: a database or cache connection open at snapshot time (the probe's
  connection tracking marks those it saw made): its socket is dead after a restore;
- ``random``: a value that ``random``, ``uuid``, ``os.urandom`` or ``secrets`` returned
  during INIT (also its ``hex()``/``str()`` form, or a UUID made from those bytes): every
  environment has the same "random" value, its ids and salts collide;
- ``timestamp``: a ``time.time()``/``time.time_ns()`` figure or a ``datetime`` taken during
  INIT: it is the publish time, not the restore's, in every environment;
- ``credentials``: an object with an expiry (botocore's refreshable credentials, anything
  with an ``expiry_time``/``expiration`` attribute, a dict with an ``Expiration`` key, as
  STS returns): it may have expired by the time an environment is restored.

How: under ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`` the probe wraps the module-level
functions of ``random``, ``uuid``, ``os.urandom`` and ``secrets`` during INIT and keeps
the first :data:`MAX_RECORDED` values they return (a list append per call); the
before-snapshot hook stops that and looks at the globals of the function's own modules
(files under ``LAMBDA_TASK_ROOT``, as the leak search), each searched at most
:data:`MAX_DEPTH` levels into containers and attributes, :data:`MAX_NODES` nodes per global,
:data:`MAX_GLOBALS` globals in all. That runs at publish time, when no caller waits. The
hazards found are reported on the first invocation after each restore (a span event each,
one warning each, naming the module and the global; never a value). Without the runtime's
hooks, the search runs on that first invocation instead.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

__all__ = [
    "CONNECTION",
    "CREDENTIALS",
    "MAX_RECORDED",
    "RANDOM",
    "TIMESTAMP",
    "before_snapshot",
    "random_forms",
    "recorded_values",
    "report",
    "search",
    "start_recording",
    "stop_recording",
]

CONNECTION = "connection"
RANDOM = "random"
TIMESTAMP = "timestamp"
CREDENTIALS = "credentials"
KINDS = (CONNECTION, RANDOM, TIMESTAMP, CREDENTIALS)

MAX_RECORDED = 256
MAX_GLOBALS = 5000
MAX_NODES = 200
MAX_DEPTH = 4
MAX_HAZARDS = 50
# Margin around INIT within which a clock reading counts as taken during INIT.
WINDOW_MARGIN_NS = 1_000_000_000

# Module functions whose results are recorded during INIT.
RANDOM_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "random": ("random", "uniform", "randint", "randrange", "getrandbits", "randbytes"),
    "uuid": ("uuid1", "uuid4"),
    "secrets": ("token_bytes", "token_hex", "token_urlsafe", "randbits", "randbelow"),
    "os": ("urandom",),
}
_CREDENTIAL_ATTRIBUTES = ("expiry_time", "_expiry_time", "expiration", "_expiration")
_CREDENTIAL_KEYS = frozenset({"Expiration", "expiration", "expiry_time", "expires_at"})
_CONTAINERS = (dict, list, tuple, set, frozenset)
_SKIPPED_PATHS = ("/site-packages/", "/dist-packages/", "/opt/")

_recorded: list[Any] = []
_recording = [False]
# (owner, attribute, original) of every function wrapped; undone at the snapshot.
_wrapped: list[tuple[Any, str, Any]] = []
# The hazards found at the snapshot, and the environment they were last reported for.
_found: list[tuple[str, str, str]] | None = None
# (module, global) -> id of its value as it went into the snapshot.
_snapshot_ids: dict[tuple[str, str], int | None] = {}
_reported_for: list[str | None] = [None]


# -- INIT: record what the random sources return -----------------------------------------


def start_recording() -> None:
    """Record the values of the random sources from now until :func:`stop_recording`."""
    if _recording[0]:
        return
    _recording[0] = True
    from lifecycle_probe.imports import when_imported

    for name in RANDOM_FUNCTIONS:
        module = sys.modules.get(name)
        if module is not None:
            _wrap_module(module)
        else:
            when_imported(name, _wrap_module)


def _wrap_module(module: ModuleType) -> None:
    if not _recording[0]:
        return
    for attribute in RANDOM_FUNCTIONS.get(module.__name__, ()):
        original = getattr(module, attribute, None)
        if original is None or getattr(original, "__lifecycle_probe_records__", False):
            continue
        setattr(module, attribute, _recorder(original))
        _wrapped.append((module, attribute, original))


def _recorder(original: Callable[..., Any]) -> Callable[..., Any]:
    def recorded(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        if _recording[0] and len(_recorded) < MAX_RECORDED:
            _recorded.append(value)
        return value

    recorded.__lifecycle_probe_records__ = True  # type: ignore[attr-defined]
    recorded.__wrapped__ = original  # type: ignore[attr-defined]
    recorded.__name__ = getattr(original, "__name__", "recorded")
    recorded.__doc__ = getattr(original, "__doc__", None)
    return recorded


def stop_recording() -> None:
    """Stop recording and put the original functions back (a name bound to a wrapper
    meanwhile keeps working: it only passes through now)."""
    _recording[0] = False
    while _wrapped:
        owner, attribute, original = _wrapped.pop()
        try:
            if getattr(getattr(owner, attribute, None), "__wrapped__", None) is original:
                setattr(owner, attribute, original)
        except Exception:
            pass


def recorded_values() -> tuple[Any, ...]:
    """The values recorded during INIT (at most :data:`MAX_RECORDED`)."""
    return tuple(_recorded)


# -- the search -----------------------------------------------------------------------------


def random_forms(values: tuple[Any, ...] | list[Any]) -> set[Any]:
    """The values and the forms they are commonly kept in: text of bytes and UUIDs, the
    UUID made of 16 random bytes. Too common to tell anything: short strings, small ints."""
    uuid = sys.modules.get("uuid")
    forms: set[Any] = set()
    for value in values:
        kind = type(value)
        if kind is float:
            forms.add(value)
        elif kind is int:
            if abs(value) >= 1000:
                forms.add(value)
        elif kind is str:
            if len(value) >= 8:
                forms.add(value)
        elif kind in (bytes, bytearray):
            if len(value) >= 4:
                data = bytes(value)
                forms.update((data, data.hex()))
                if len(data) == 16 and uuid is not None:
                    made = uuid.UUID(bytes=data, version=4)
                    forms.update((made, str(made), made.hex, made.int))
        elif uuid is not None and isinstance(value, uuid.UUID):
            forms.update((value, str(value), value.hex, value.int))
    return forms


def function_modules(task_root: str | None) -> list[ModuleType]:
    """The function's own modules: files under ``task_root``, not site-packages or layers."""
    if not task_root:
        return []
    root = task_root.rstrip("/") + "/"
    found = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if (
            isinstance(path, str)
            and path.startswith(root)
            and not any(skipped in path for skipped in _SKIPPED_PATHS)
        ):
            found.append(module)
    return found


class _Search:
    def __init__(self, forms: set[Any], window_ns: tuple[int, int]) -> None:
        self.forms = forms
        self.start_ns, self.end_ns = window_ns
        from lifecycle_probe.connections.tracking import ConnectionState

        self.connection_state = ConnectionState
        self.datetime = getattr(sys.modules.get("datetime"), "datetime", None)

    def kind_of(self, value: Any) -> str | None:
        """The hazard ``value`` is or holds, if any (searched bounded)."""
        budget = MAX_NODES
        stack: list[tuple[Any, int]] = [(value, 0)]
        while stack and budget > 0:
            node, depth = stack.pop()
            budget -= 1
            kind = type(node)
            if kind in (float, int, str, bytes):
                if node in self.forms:
                    return RANDOM
                if kind is not str and kind is not bytes and self._clock_reading(node):
                    return TIMESTAMP
                continue
            if kind in _CONTAINERS:
                if kind is dict:
                    if _CREDENTIAL_KEYS.intersection(k for k in node if type(k) is str):
                        return CREDENTIALS
                    children: Any = node.values()
                else:
                    children = node
                if depth < MAX_DEPTH:
                    for child in children:
                        if len(stack) >= budget:
                            break
                        stack.append((child, depth + 1))
                continue
            try:
                if node in self.forms:  # a UUID
                    return RANDOM
            except TypeError:
                pass  # unhashable
            if self.datetime is not None and isinstance(node, self.datetime):
                if self._datetime_in_window(node):
                    return TIMESTAMP
                continue
            if isinstance(node, type):
                continue
            attributes = _attributes(node)
            if attributes is None:
                continue
            found = self._own_kind(node, attributes)
            if found is not None:
                return found
            if depth < MAX_DEPTH:
                for child in attributes.values():
                    if len(stack) >= budget:
                        break
                    stack.append((child, depth + 1))
        return None

    def _own_kind(self, node: Any, attributes: dict[str, Any]) -> str | None:
        for attribute in _CREDENTIAL_ATTRIBUTES:
            if attributes.get(attribute) is not None:
                return CREDENTIALS
        for child in attributes.values():
            if isinstance(child, self.connection_state):
                return CONNECTION if _open(node, attributes) else None
        return None

    def _clock_reading(self, number: float) -> bool:
        # time.time(), int(time.time()), time.time() * 1000, time.time_ns()
        start, end = self.start_ns, self.end_ns
        return any(start <= number * scale <= end for scale in (1_000_000_000, 1_000_000, 1))

    def _datetime_in_window(self, value: Any) -> bool:
        try:
            if value.tzinfo is None:
                # naive: local time (datetime.now()) or UTC (utcnow()); Lambda runs in UTC
                import datetime as dt

                utc = value.replace(tzinfo=dt.timezone.utc)
                candidates = [value.timestamp(), utc.timestamp()]
            else:
                candidates = [value.timestamp()]
        except (OverflowError, OSError, ValueError):
            return False
        return any(self._clock_reading(seconds) for seconds in candidates)


def _attributes(node: Any) -> dict[str, Any] | None:
    try:
        attributes = object.__getattribute__(node, "__dict__")
    except Exception:
        return None
    return attributes if type(attributes) is dict else None


def _open(connection: Any, attributes: dict[str, Any]) -> bool:
    """Whether a tracked connection is still open (closed ones are no hazard)."""
    if attributes.get("_sock", True) is None:  # pymysql, redis: no socket
        return False
    try:
        closed = getattr(connection, "closed", False)  # psycopg2 (0/1/2), psycopg (bool)
    except Exception:
        return True
    return not (closed is True or (type(closed) is int and closed != 0))


def search(
    task_root: str | None, window_ns: tuple[int, int], values: tuple[Any, ...] | None = None
) -> list[tuple[str, str, str]]:
    """(module, global, kind) of each hazard in the function's module globals."""
    searcher = _Search(random_forms(recorded_values() if values is None else values), window_ns)
    hazards: list[tuple[str, str, str]] = []
    looked = 0
    for module in function_modules(task_root):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            if name.startswith("__"):
                continue
            looked += 1
            if looked > MAX_GLOBALS or len(hazards) >= MAX_HAZARDS:
                return hazards
            kind_of_value = type(value)
            if kind_of_value is type(sys) or isinstance(value, type):
                continue  # modules and classes are code, not state
            if kind_of_value.__name__ in ("function", "builtin_function_or_method"):
                continue
            kind = searcher.kind_of(value)
            if kind is not None:
                hazards.append((module.__name__, name, kind))
    return hazards


def task_root() -> str | None:
    """Where the function's own code lives (``LAMBDA_TASK_ROOT``)."""
    return os.environ.get("LAMBDA_TASK_ROOT") or None


# -- the snapshot and the restore -------------------------------------------------------------


def before_snapshot(init_start_ns: int) -> None:
    """Stop recording and search the globals as they go into the snapshot."""
    global _found
    stop_recording()
    window = (init_start_ns - WINDOW_MARGIN_NS, time.time_ns() + WINDOW_MARGIN_NS)
    _found = search(task_root(), window)
    _snapshot_ids.clear()
    _snapshot_ids.update({(m, n): _id_of_global(m, n) for m, n, _ in _found})


def _id_of_global(module: str, name: str) -> int | None:
    namespace = getattr(sys.modules.get(module), "__dict__", None)
    if not isinstance(namespace, dict) or name not in namespace:
        return None
    return id(namespace[name])


def report(environment: Any, facts: Any) -> int:
    """On the first invocation after a restore: the hazards as events of ``environment``
    and one warning each. Returns how many. Never raises."""
    try:
        return _report(environment, facts)
    except Exception as exc:
        from lifecycle_probe._safe import report_failure

        report_failure("SnapStart hazard search", exc)
        return 0


def _report(environment: Any, facts: Any) -> int:
    global _found
    if _reported_for[0] == facts.environment_id:
        return 0
    _reported_for[0] = facts.environment_id
    hazards = _found
    if hazards is None:
        # No before-snapshot hook ran (no snapshot_restore_py): search now, INIT's
        # window being what the environment knows of it.
        stop_recording()
        start = environment.init_start_ns
        end = environment.init_end_ns or time.time_ns()
        hazards = _found = search(task_root(), (start - WINDOW_MARGIN_NS, end + WINDOW_MARGIN_NS))
    # A global that an after-restore hook drew again (the remedy) is no longer the
    # snapshot's value: only those still holding it are hazards in this environment.
    hazards = [
        (module, name, kind)
        for module, name, kind in hazards
        if (module, name) not in _snapshot_ids
        or _id_of_global(module, name) == _snapshot_ids[(module, name)]
    ]
    if not hazards:
        return 0
    from lifecycle_probe.loglines import SNAPSTART_HAZARD, WARNING, write_line
    from lifecycle_probe.records import HAZARD_EVENT, HAZARD_KIND, LifecycleEvent

    now_ns = time.time_ns()
    for module, name, kind in hazards:
        environment.add_event(
            LifecycleEvent(
                name=HAZARD_EVENT,
                time_ns=now_ns,
                attributes=(
                    ("code.namespace", module),
                    ("lifecycle.global.name", name),
                    (HAZARD_KIND, kind),
                ),
            )
        )
        write_line(
            SNAPSTART_HAZARD,
            WARNING,
            f"lifecycle_probe: SnapStart hazard: {module}.{name} holds {_WHAT[kind]} "
            f"captured in the snapshot; every restored environment shares it. {_ADVICE[kind]}",
            {"code_namespace": module, "global_name": name, "hazard_kind": kind},
            facts=facts,
            function=environment.function,
        )
    return len(hazards)


_WHAT = {
    CONNECTION: "a connection open at snapshot time",
    RANDOM: "a random value made during INIT",
    TIMESTAMP: "a time taken during INIT",
    CREDENTIALS: "credentials with an expiry",
}
_ADVICE = {
    CONNECTION: "Its socket is dead after a restore: reconnect in an after-restore hook "
    "(snapshot_restore_py.register_after_restore).",
    RANDOM: "Draw it again in an after-restore hook, or at first use.",
    TIMESTAMP: "It is the publish time, not the restore's: take it in an after-restore hook.",
    CREDENTIALS: "They may have expired when the environment is restored: fetch them in an "
    "after-restore hook, or at first use.",
}
