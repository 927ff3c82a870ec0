"""A SnapStart function: INIT runs once, each environment is restored from the snapshot.

The probe tags the first invocation after a restore ``restored``, with the restore's own
timing (INIT itself ran when the version was published), and gives the environment a new
id. Anything unique drawn at INIT is shared by every restored environment: draw it again
in an after-restore hook (``snapshot_restore_py``, which the Lambda runtime provides).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from lifecycle_probe import current, probe

INSTANCE_ID = uuid.uuid4().hex  # drawn at INIT: the same in every restored environment...


def _after_restore() -> None:
    global INSTANCE_ID
    INSTANCE_ID = uuid.uuid4().hex  # ...unless drawn again after each restore


try:
    from snapshot_restore_py import register_after_restore
except ImportError:  # not on Lambda, nor in the local Lambda
    pass
else:
    register_after_restore(_after_restore)


@probe
def handler(event: Any, context: Any) -> dict[str, Any]:
    # Some work (``work_ms``): Lambda's report of the previous request, buffered for up
    # to 25 ms, arrives while an invocation runs, never while the environment is frozen.
    time.sleep(float(event.get("work_ms", 0)) / 1000)
    facts = current()
    return {"start": facts.start, "invocation_seq": facts.invocation_seq}
