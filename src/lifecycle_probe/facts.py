"""``lifecycle_probe.current()``: read-only facts for the user's own logs."""

from __future__ import annotations

from _contextvars import ContextVar

from lifecycle_probe.environment import current_environment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lifecycle_probe.records import LifecycleFacts

# The invocation in flight in this thread or task; set by ``@probe`` around the handler.
in_flight: ContextVar[LifecycleFacts | None] = ContextVar("lifecycle_probe_in_flight", default=None)


def current() -> LifecycleFacts:
    """Facts about this environment and, inside a probed handler, the invocation in flight."""
    facts = in_flight.get()
    if facts is not None:
        return facts
    environment = current_environment()
    # A thread the handler started does not inherit the context variable; while exactly
    # one invocation runs, it is the one that thread works for.
    if environment.in_flight == 1 and environment.in_flight_facts is not None:
        return environment.in_flight_facts
    return environment.facts_between_invocations()
