"""``ColdStart`` written once per environment and metric, whichever tool writes it first.

Powertools' ``@metrics.log_metrics(capture_cold_start_metric=True)`` writes its own EMF
``ColdStart`` (namespace, ``function_name``, ``service``) after the handler returns; the
probe's ``emf`` sink writes one too. Where the two land on the same metric, CloudWatch must
count the cold start once. Both ask :func:`count_once` before writing: the first to ask
writes, the other does not, in any stacking order. Where the metrics differ (another
namespace, service or function name, as either tool may be configured in code), each is
counted in its own.

Only this registry lives here: the patch of Powertools is in ``installation.py``, the
probe's own question in ``sinks/emf.py``.
"""

from __future__ import annotations

import _thread

__all__ = ["count_once", "forget"]

# (namespace, function_name, service) -> id of the environment whose ColdStart it counted.
_counted: dict[tuple[str, str, str | None], str] = {}
_lock = _thread.allocate_lock()


def count_once(
    namespace: str, function_name: str, service: str | None, environment_id: str
) -> bool:
    """True for the first caller that would write this ColdStart in this environment."""
    key = (namespace, function_name, service or None)
    with _lock:
        if _counted.get(key) == environment_id:
            return False
        _counted[key] = environment_id
        return True


def forget() -> None:
    """Forget what was counted (tests that simulate a new runtime process)."""
    with _lock:
        _counted.clear()
