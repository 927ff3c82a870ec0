"""A handler decorated with ``@probe``: the probe comes from the layer (/opt/python).

Locally, from the repository root::

    lifecycle-probe emulate decorated.handler --code-dir examples/sam/decorated \\
        --env LIFECYCLE_PROBE_EXPORTER=console
"""

from __future__ import annotations

from typing import Any

from lifecycle_probe import current, probe


@probe
def handler(event: Any, context: Any) -> dict[str, Any]:
    facts = current()
    return {
        "start": facts.start,
        "invocation_seq": facts.invocation_seq,
        "environment_id": facts.environment_id,
        "init_duration_s": facts.init_duration_s,
        "idle_s": facts.idle_s,
    }
