"""Request state kept in a module global: the next request in the environment sees it.

``current_order_id`` is rebound to each event's order id, the lifecycle article's own
example; ``cached_config`` is a lazy cache set once, which is fine. Global-leak detection
(``LIFECYCLE_PROBE_GLOBALS=warn``) reports the first as a ``lifecycle.global.leak`` event
once it is active (issue 14; the setting has nothing behind it yet): see README.md.
"""

from __future__ import annotations

from typing import Any

from lifecycle_probe import probe

current_order_id: str | None = None
cached_config: dict[str, Any] | None = None


@probe
def handler(event: Any, context: Any) -> dict[str, Any]:
    global current_order_id, cached_config
    if cached_config is None:
        cached_config = {"currency": "EUR"}
    previous = current_order_id
    current_order_id = event.get("order_id")  # the leak: request state in a global
    return {"order_id": current_order_id, "previous_request_left": previous}
