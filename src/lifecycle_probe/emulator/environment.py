"""One execution environment: a real runtime process, its Runtime API, its lifecycle.

It is made of three parts, each in a module of its own:

* :mod:`.lifecycle`: the process, the states (init, idle, invoking, snapshot, ...),
  freezing and thawing, claims, shutdown; the state diagram is there;
* :mod:`.delivery`: an invocation's way through it, and the runtime's Runtime API;
* :mod:`.extensions_api`: the Extensions API (and the Telemetry API subscription).

What the process is launched with is :mod:`.launch`'s, the START/END/REPORT lines and
their figures :mod:`.reports`', the Telemetry API's buffering and delivery
:mod:`.telemetry_api`'s and its events' shapes :mod:`.platform_events`'; Lambda Managed
Instances are :mod:`.managed_instances`.
"""

from __future__ import annotations

from lifecycle_probe.emulator.delivery import InvocationDelivery
from lifecycle_probe.emulator.extensions_api import ExtensionsApi
from lifecycle_probe.emulator.runtime_api import RuntimeApiBackend

__all__ = ["ExecutionEnvironment"]


class ExecutionEnvironment(InvocationDelivery, ExtensionsApi):
    """A runtime process (``python -m awslambdaric HANDLER``) and its Runtime API.

    Created in state ``init`` with its endpoint bound; :meth:`start` launches the
    process. ``claimed_by`` names the request that has claimed the environment (from
    claim until its response); a settled environment nobody has claimed is frozen.
    """

    def _backend(self) -> RuntimeApiBackend:
        # Only the parts together answer every Runtime, Extensions and Telemetry API call.
        return self
