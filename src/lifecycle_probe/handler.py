"""The zero-code entry point: ``_HANDLER=lifecycle_probe.handler.handler``.

The layer's exec wrapper moves the function's own handler into
``LIFECYCLE_PROBE_HANDLER`` and points ``_HANDLER`` here. Importing this module imports
the function's module, as the runtime would have, and wraps its handler with ``@probe``.
"""

from __future__ import annotations

import os
from importlib import import_module

from lifecycle_probe.decorator import probe
from lifecycle_probe.imports import handler_module_name
from lifecycle_probe.installation import install

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _load_target(spec: str | None) -> Callable[..., Any]:
    module_name = handler_module_name(spec)
    if spec is None or module_name is None:
        # Without the user's handler there is nothing to run: fail INIT with a clear error.
        raise RuntimeError(
            "LIFECYCLE_PROBE_HANDLER is not set to 'module.function'; the exec wrapper "
            f"sets it from _HANDLER (got {spec!r})"
        )
    function: Callable[..., Any] = getattr(import_module(module_name), spec.rsplit(".", 1)[1])
    return function


install()
handler = probe(_load_target(os.environ.get("LIFECYCLE_PROBE_HANDLER")))
