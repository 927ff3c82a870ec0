"""A keep-alive connection made at INIT, reused after a freeze longer than its cut-off.

The handler asks an inventory service over a urllib3 pool (as boto3 and requests do)
whose connection is made at INIT. Behind the service, a load balancer closes connections
idle for a second; while the environment sits frozen the connection dies, and on the next
invocation urllib3 finds it dead and replaces it: the probe reports a stale connection
(``detected``) with its idle time, and the report advises on the setting to change.
"""

from __future__ import annotations

import os
from typing import Any

import urllib3

from lifecycle_probe import probe

INVENTORY_URL = os.environ["INVENTORY_URL"]
INVENTORY = urllib3.PoolManager(maxsize=1, timeout=2.0, retries=False)
INVENTORY.request("GET", INVENTORY_URL)  # connected at INIT, kept for the invocations


@probe
def handler(event: Any, context: Any) -> dict[str, Any]:
    reply = INVENTORY.request("GET", INVENTORY_URL)
    return {"status": reply.status}
