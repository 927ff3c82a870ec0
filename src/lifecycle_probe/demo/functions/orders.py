"""An order-lookup function: some INIT work, a module-level cache, a probed handler.

With ``ORDERS_INVENTORY_URL`` set it also asks an inventory service over a keep-alive
HTTP connection made at INIT (urllib3, as boto3 and requests do): a connection that the
service's load balancer closes while the environment sits frozen, which urllib3 then
replaces, and the probe reports. The demo runs it as ``orders.handler`` with this folder
as the function's code.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from lifecycle_probe import current, probe

__all__ = ["handler"]

# INIT work, as a real function does it: configuration, clients, a warm cache.
time.sleep(float(os.environ.get("ORDERS_INIT_WORK_S", "0.12")))
PRICES = {"apple": 3, "pear": 4, "fig": 9}
SERVED = 0
LAST_ITEMS: list[str] = []
INVENTORY_URL = os.environ.get("ORDERS_INVENTORY_URL")
INVENTORY = None
if INVENTORY_URL:
    import urllib3

    INVENTORY = urllib3.PoolManager(maxsize=1, timeout=2.0, retries=False)
    INVENTORY.request("GET", INVENTORY_URL)  # connected at INIT, kept for the invocations


@probe
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global SERVED
    SERVED += 1
    work_s = float(event.get("work_s", 0))
    if work_s:
        time.sleep(work_s)
    items = event.get("items", ["apple"])
    # A leak, on purpose: the request's items kept in a module global, which the next
    # request of this environment sees (the probe reports it as a lifecycle.global.leak).
    global LAST_ITEMS
    LAST_ITEMS = items
    if INVENTORY is not None and INVENTORY_URL:
        INVENTORY.request("GET", INVENTORY_URL)
    facts = current()
    return {
        "statusCode": 200,
        "body": json.dumps({"total": sum(PRICES.get(i, 0) for i in items)}),
        "served_by_this_environment": SERVED,
        "lifecycle": {
            "start": facts.start,
            "invocation_seq": facts.invocation_seq,
            "environment_id": facts.environment_id,
            "idle_s": facts.idle_s,
        },
    }
