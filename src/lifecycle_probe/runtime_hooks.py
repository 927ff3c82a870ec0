"""Signals from the runtime itself: INIT end, event arrival, SnapStart snapshot and restore.

INIT is over for Lambda when the runtime first asks the Runtime API for an event. Both
runtimes Python functions run on, AWS's Runtime Interface Client (``awslambdaric``) and the
managed runtimes' own modules under ``/var/runtime``, ask through a ``wait_next_invocation``
method of their runtime-client class. Wrapping that method tells us the exact INIT end,
even when the probe is imported from inside the handler module, where no import hook
could see that module finish.
"""

from __future__ import annotations

import sys
import time

from lifecycle_probe._safe import report_failure
from lifecycle_probe.config import variable
from lifecycle_probe.environment import SNAP_START, current_environment
from lifecycle_probe.records import SOURCE_RUNTIME, SOURCE_SNAPSHOT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any, Protocol

    # An interface for the type checker only: a class made at run time would cost INIT
    # ~0.1 M instructions for two methods nobody inherits.
    class EventRequestListener(Protocol):
        """What ``add_event_request_listener`` accepts."""

        def wait_registered(self, timeout_s: float = 1.0) -> bool:
            """Called before the runtime's first request; may block, bounded."""

        def response_sent(self, request_id: str | None = None) -> None:
            """Called before each later request: the response to ``request_id`` is out."""


__all__ = [
    "RUNTIME_CLIENT_MODULES",
    "add_event_request_listener",
    "attach_to_loaded_runtime",
    "event_requests_seen",
    "register_snapshot_hooks",
    "unwrap_runtime_clients",
    "when_runtime_client_wrapped",
    "wrap_runtime_client",
]

# Module names of runtime clients: awslambdaric, then the managed runtimes' flat layout.
RUNTIME_CLIENT_MODULES = ("awslambdaric.lambda_runtime_client", "lambda_runtime_client")
_MARK = "__lifecycle_probe_wrapped__"

_snapshot_hooks_registered = False
# True once a disabled probe took the hooks down (unwrap_runtime_clients): the SnapStart
# hooks, registered for good, then do nothing until the hooks are installed again.
_withdrawn = False

# Told of every request the runtime makes for an event: the first ends INIT, each later
# one means the previous response has been sent (the internal extension flushes then).
_listeners: list[EventRequestListener] = []
_event_requests = 0
_last_request_id: str | None = None
# Whether a runtime client's event request is wrapped, and who waits for that: the
# internal extension registers only then, since only then can it see the responses.
_wrapped = False
_on_wrapped: list[Callable[[], object]] = []


def add_event_request_listener(listener: EventRequestListener) -> None:
    """Tell ``listener`` about the runtime's requests for events."""
    _listeners.append(listener)


def runtime_client_wrapped() -> bool:
    """True once a runtime client's ``wait_next_invocation`` is wrapped in this process."""
    return _wrapped


def when_runtime_client_wrapped(callback: Callable[[], object]) -> None:
    """Call ``callback()`` once a runtime client is wrapped: now if it already is."""
    if _wrapped:
        callback()
    else:
        _on_wrapped.append(callback)


def event_requests_seen() -> int:
    """How many requests for an event the wrapped runtime client has made so far."""
    return _event_requests


def _notify_listeners() -> None:
    global _event_requests
    _event_requests += 1
    for listener in _listeners:
        try:
            if _event_requests == 1:
                # An extension must be registered before INIT ends: hold the runtime's
                # first request until registration is through (bounded).
                listener.wait_registered()
            else:
                listener.response_sent(_last_request_id)
        except Exception as exc:
            report_failure("event request listener", exc)


def attach_to_loaded_runtime() -> bool:
    """Wrap the runtime client's event request if its module is loaded; True on success."""
    attached = False
    for name in RUNTIME_CLIENT_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            attached = wrap_runtime_client(module) or attached
    return attached


def wrap_runtime_client(module: ModuleType) -> bool:
    """Wrap ``wait_next_invocation`` on every class of ``module`` that defines it."""
    wrapped_any = False
    for candidate in list(vars(module).values()):
        if not isinstance(candidate, type) or candidate.__module__ != module.__name__:
            continue
        method = candidate.__dict__.get("wait_next_invocation")
        if method is None or not callable(method):
            continue
        if not getattr(method, _MARK, False):
            # setattr: the class is whatever the runtime defines, unknown to the type checker.
            setattr(candidate, "wait_next_invocation", _wrap_wait_next(method))  # noqa: B010
        wrapped_any = True
    if wrapped_any:
        _runtime_client_wrapped()
    return wrapped_any


def unwrap_runtime_clients() -> None:
    """Give every wrapped runtime client its own ``wait_next_invocation`` back, and make
    the SnapStart hooks (which cannot be unregistered) do nothing.

    For a probe disabled after importing ``probe`` had wrapped a runtime client already
    loaded: a disabled probe leaves no wrapped runtime client behind. Listeners stay:
    only an enabled probe adds them, and then nothing is taken down.
    """
    global _wrapped, _withdrawn
    _withdrawn = True
    _on_wrapped.clear()
    _wrapped = False
    for name in RUNTIME_CLIENT_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        for candidate in list(vars(module).values()):
            if not isinstance(candidate, type):
                continue
            method = candidate.__dict__.get("wait_next_invocation")
            original = getattr(method, "__wrapped__", None)
            if getattr(method, _MARK, False) and original is not None:
                setattr(candidate, "wait_next_invocation", original)  # noqa: B010


def _runtime_client_wrapped() -> None:
    global _wrapped
    if _wrapped:
        return
    _wrapped = True
    callbacks = list(_on_wrapped)
    _on_wrapped.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception as exc:
            report_failure("runtime hook (client wrapped)", exc)


def _wrap_wait_next(original: Callable[..., Any]) -> Callable[..., Any]:
    def wait_next_invocation(self: object, *args: Any, **kwargs: Any) -> Any:
        # Never let the probe break the runtime's loop: both marks are guarded, and the
        # original call's result and errors pass through untouched.
        try:
            current_environment().mark_init_end(SOURCE_RUNTIME)
        except Exception as exc:
            report_failure("runtime hook (event request)", exc)
        if _listeners:
            _notify_listeners()
        request = original(self, *args, **kwargs)
        try:
            current_environment().mark_event_received(time.time_ns())
            if _listeners:
                global _last_request_id
                invoke_id = getattr(request, "invoke_id", None)
                _last_request_id = invoke_id if isinstance(invoke_id, str) else None
        except Exception as exc:
            report_failure("runtime hook (event received)", exc)
        return request

    setattr(wait_next_invocation, _MARK, True)
    wait_next_invocation.__wrapped__ = original  # type: ignore[attr-defined]
    wait_next_invocation.__doc__ = original.__doc__
    return wait_next_invocation


def register_snapshot_hooks() -> bool:
    """Under SnapStart, mark INIT end before the snapshot and a new environment after restore."""
    global _snapshot_hooks_registered, _withdrawn
    _withdrawn = False
    if _snapshot_hooks_registered:
        return True
    if variable("AWS_LAMBDA_INITIALIZATION_TYPE") != SNAP_START:
        return False
    try:
        # Only present in SnapStart-capable runtimes; imported only under snap-start.
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(_before_snapshot)
    register_after_restore(_after_restore)
    _snapshot_hooks_registered = True
    try:
        # Values of random sources made during INIT, for the hazard search at the snapshot;
        # and what the first invocation after a restore needs that other INITs leave to
        # their first use (the restore's record, the event's trigger, the /tmp and memory
        # watch), loaded now so that the snapshot holds them and a restore never imports
        # them. All of them the probe's imports, not the function's.
        from lifecycle_probe.probe_threads import probe_work

        with probe_work():
            from lifecycle_probe import rare_records, resources, triggers  # noqa: F401
            from lifecycle_probe.snapstart import start_recording

        start_recording()
    except Exception as exc:
        report_failure("SnapStart recording", exc)
    return True


def _before_snapshot() -> None:
    if _withdrawn:
        return
    try:
        current_environment().mark_init_end(SOURCE_SNAPSHOT)
    except Exception as exc:  # a raising hook would fail the snapshot: never
        report_failure("before-snapshot hook", exc)
    try:
        # What the snapshot will hold: searched now, at publish time, when no caller waits;
        # reported on the first invocation after each restore.
        from lifecycle_probe.snapstart import before_snapshot

        before_snapshot(current_environment().init_start_ns)
    except Exception as exc:
        report_failure("SnapStart hazard search", exc)


def _after_restore() -> None:
    if _withdrawn:
        return
    try:
        current_environment().mark_restored()
    except Exception as exc:  # a raising hook fails the restore: never
        report_failure("after-restore hook", exc)
