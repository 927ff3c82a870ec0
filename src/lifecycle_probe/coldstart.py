"""``ColdStart`` written once per environment and metric, whichever tool writes it first.

Powertools' ``@metrics.log_metrics(capture_cold_start_metric=True)`` writes its own EMF
``ColdStart`` (namespace, ``function_name``, ``service``) after the handler returns; the
probe's ``emf`` sink writes one too. Where the two land on the same metric, CloudWatch must
count the cold start once. Both ask :func:`count_once` before writing: the first to ask
writes, the other does not, in any stacking order. Where the metrics differ (another
namespace, service or function name, as either tool may be configured in code), each is
counted in its own.

The registry and Powertools' side of it live here (:func:`coordinate_with_powertools`
patches its EMF provider once that is imported); the probe's own question is in
``sinks/emf.py``. Only the ``emf`` exporter imports this module: a function exporting
otherwise never loads it.
"""

from __future__ import annotations

import _thread

from lifecycle_probe._safe import guard, report_failure
from lifecycle_probe.environment import current_environment
from lifecycle_probe.imports import when_imported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

__all__ = ["POWERTOOLS_EMF_MODULE", "coordinate_with_powertools", "count_once", "forget"]

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


# Powertools' EMF provider, whose ColdStart the probe's must not double.
POWERTOOLS_EMF_MODULE = "aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch"
_PATCHED = "__lifecycle_probe_cold_start__"


def coordinate_with_powertools() -> None:
    """Make Powertools' ``ColdStart`` ask :func:`count_once` too (nothing is imported or
    patched until Powertools' EMF provider is; idempotent: the watch is kept once, and a
    patched provider is not patched again)."""
    with guard("Powertools ColdStart hook"):
        when_imported(POWERTOOLS_EMF_MODULE, _patch_powertools)


def _patch_powertools(module: ModuleType) -> None:
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
