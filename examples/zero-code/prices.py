"""A plain handler with no trace of the probe: the layer's exec wrapper instruments it.

On Lambda: attach the layer and set ``AWS_LAMBDA_EXEC_WRAPPER=/opt/lifecycle-probe``; the
wrapper moves ``_HANDLER`` (``prices.handler``) into ``LIFECYCLE_PROBE_HANDLER`` and points
the runtime at ``lifecycle_probe.handler.handler``, which imports this module under the
probe's import tracer, so it and its imports appear in the INIT report. README.md runs
it in the local Lambda with that entry point set directly.
"""

from __future__ import annotations

import json
from typing import Any

TABLE = {"apple": 3, "pear": 4}


def handler(event: Any, context: Any) -> dict[str, Any]:
    item = event.get("item", "apple") if isinstance(event, dict) else "apple"
    return {"statusCode": 200, "body": json.dumps({"price": TABLE.get(item)})}
