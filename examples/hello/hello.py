"""The smallest probed handler: it reports where it stands in the lifecycle.

Run it in the local Lambda (no AWS, no Docker), from the repository root::

    lifecycle-probe emulate hello.handler --code-dir examples/hello \\
        --env LIFECYCLE_PROBE_EXPORTER=console --log-dir /tmp/hello-logs

Each invocation returns the facts ``lifecycle_probe.current()`` gives the handler, and the
probe's ``console`` exporter writes one JSON line per INIT and invocation to the log.
"""

from __future__ import annotations

import time
from typing import Any

from lifecycle_probe import current, probe

# Work done at INIT, outside the handler: it shows up in the INIT duration.
time.sleep(0.05)
GREETING = "hello"


@probe
def handler(event: Any, context: Any) -> dict[str, Any]:
    facts = current()
    return {
        "greeting": GREETING,
        "start": facts.start,
        "invocation_seq": facts.invocation_seq,
        "environment_id": facts.environment_id,
        "init_duration_s": facts.init_duration_s,
        "idle_s": facts.idle_s,
    }
