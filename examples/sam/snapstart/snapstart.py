"""A SnapStart function (``SnapStart: ApplyOn: PublishedVersions``): INIT runs once when
a version is published, and each new environment is restored from the snapshot. The
probe tags the first invocation after a restore ``restored`` with the restore's own
timing, and gives the environment a new id.

Anything unique drawn at INIT is shared by every environment restored from the same
snapshot; refresh it in an after-restore hook (``snapshot_restore_py``, which the Lambda
runtime provides; absent locally).

Locally, from the repository root::

    lifecycle-probe emulate snapstart.handler --code-dir examples/sam/snapstart \\
        --init-type snap-start --env LIFECYCLE_PROBE_EXPORTER=console
"""

from __future__ import annotations

import uuid
from typing import Any

from lifecycle_probe import current, probe

# Drawn at INIT, so the same in every environment restored from one snapshot...
INSTANCE_ID = uuid.uuid4().hex


def _after_restore() -> None:
    # ...unless it is drawn again after each restore.
    global INSTANCE_ID
    INSTANCE_ID = uuid.uuid4().hex


try:
    from snapshot_restore_py import register_after_restore
except ImportError:  # not on Lambda
    pass
else:
    register_after_restore(_after_restore)


@probe
def handler(event: Any, context: Any) -> dict[str, Any]:
    facts = current()
    return {
        "start": facts.start,
        "invocation_seq": facts.invocation_seq,
        "environment_id": facts.environment_id,
        "instance_id": INSTANCE_ID,
    }
