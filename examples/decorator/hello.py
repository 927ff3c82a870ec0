"""The smallest probed handler: ``@probe``, and ``current()`` to see where it stands.

Each invocation returns the facts ``lifecycle_probe.current()`` gives the handler: its
start type, its sequence number in the environment, the INIT duration and the time it
sat frozen before this invocation. See README.md for the command and its output.
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
        "init_duration_s": facts.init_duration_s,
        "idle_s": facts.idle_s,
    }
