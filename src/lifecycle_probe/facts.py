"""``lifecycle_probe.current()``: read-only facts for the user's own logs."""

from __future__ import annotations

from _contextvars import ContextVar

from lifecycle_probe.environment import current_environment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lifecycle_probe.environment import Invocation
    from lifecycle_probe.records import LifecycleFacts

__all__ = ["current"]

# The invocation of this thread or task, set by ``@probe`` as the handler starts. It is
# not cleared when the handler ends (a context variable's set costs more than the rest of
# an invocation's bookkeeping): the invocation says whether it has ``ended``, and the next
# one replaces it.
in_flight: ContextVar[Invocation | None] = ContextVar("lifecycle_probe_in_flight", default=None)


def invocation_in_flight() -> Invocation | None:
    """The invocation the calling thread works for, if any."""
    invocation = in_flight.get()
    if invocation is not None and not invocation.ended:
        return invocation
    # A thread the handler started does not inherit the context variable; while exactly
    # one invocation runs, it is the one that thread works for.
    return current_environment().running_invocation()


def current() -> LifecycleFacts:
    """Facts about this environment and, inside a probed handler, the invocation in flight."""
    invocation = invocation_in_flight()
    if invocation is not None:
        return invocation.facts()
    return current_environment().facts_between_invocations()
