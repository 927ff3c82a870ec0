"""``ColdStart`` written once per environment and metric, whichever tool writes it first.

Powertools' ``@metrics.log_metrics(capture_cold_start_metric=True)`` writes its own EMF
``ColdStart`` (namespace, ``function_name``, ``service``) after the handler returns; the
probe's ``emf`` sink writes one too. Where the two land on the same metric, CloudWatch must
count the cold start once. Both ask :func:`count_once` before writing: the first to ask
writes, the other does not, in any stacking order. Where the metrics differ (another
namespace, service or function name, as either tool may be configured in code), each is
counted in its own.

The registry and Powertools' side of it live here (:func:`patch_powertools`, which
``installation.py``'s post-import hook calls once Powertools' EMF provider is imported);
the probe's own question is in ``sinks/emf.py``. This module is loaded when either is
first needed (Powertools imported, or a cold start to export), never at INIT for a
function that uses no Powertools.
"""

from __future__ import annotations

import _thread

from lifecycle_probe._safe import guard, report_failure
from lifecycle_probe.environment import current_environment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = ["count_once", "forget", "patch_powertools"]

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


# Set on Powertools' patched method, so that it is never patched twice.
_PATCHED = "__lifecycle_probe_cold_start__"


def patch_powertools(module: ModuleType) -> None:
    """Make Powertools' EMF provider (``module``, just imported) ask :func:`count_once`
    before it writes its ``ColdStart`` (idempotent: a patched provider is left as it is)."""
    with guard("Powertools ColdStart hook"):
        provider = module.AmazonCloudWatchEMFProvider
        original = provider.add_cold_start_metric
        if getattr(original, _PATCHED, False):
            return

        def add_cold_start_metric(self: Any, context: Any) -> Any:
            try:
                from aws_lambda_powertools.metrics.functions import (
                    resolve_cold_start_function_name,
                )

                # The metric Powertools is about to write, named as it names it.
                function_name = resolve_cold_start_function_name(
                    function_name=self.function_name, context=context
                )
                service = str(self.service) if self.service else None
                environment_id = current_environment().environment_id
                if not count_once(str(self.namespace), function_name, service, environment_id):
                    return None  # the probe wrote this very ColdStart already
            except Exception as exc:
                report_failure("Powertools ColdStart coordination", exc)
            return original(self, context)

        setattr(add_cold_start_metric, _PATCHED, True)
        add_cold_start_metric.__wrapped__ = original  # type: ignore[attr-defined]
        provider.add_cold_start_metric = add_cold_start_metric
