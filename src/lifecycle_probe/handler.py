"""The zero-code entry point: ``_HANDLER=lifecycle_probe.handler.handler``.

The layer's exec wrapper moves the function's own handler into
``LIFECYCLE_PROBE_HANDLER`` and points ``_HANDLER`` here. Importing this module starts the
import tracer, then resolves the function's handler as the runtime would have (importing
its module) and wraps it with ``@probe``.

A failed INIT reaches Lambda as it would without the probe (see ``init_failure``): the
runtime's own error for a bad handler setting or module, and for an exception raised by
the function's INIT code the same exception, with the same frames. Imported by another
wrapper's module instead of the runtime (the OpenTelemetry layer's otel_wrapper), the
function's module is imported as that module would (``import_module`` and ``getattr``),
so the runtime's error is the one it reports with that wrapper alone.
"""

from __future__ import annotations

import os
import sys

# Before the decorator, whose import starts the import tracer: the probe's own modules
# are no imports of the function's INIT.
from lifecycle_probe.init_failure import (  # isort: skip
    at_interpreter_startup,
    defer_init_failure,
    export_init_failure,
    find_runtime,
    imported_by_runtime,
    init_resolved,
    load_handler,
    returned_fault,
    runtime_traceback,
)
from lifecycle_probe.decorator import probe  # isort: skip
from lifecycle_probe.installation import install
from lifecycle_probe.probe_threads import probe_work

# The runtime looks up ``handler`` by name; nothing else here is for users.
__all__ = ["handler"]

install()
_spec = os.environ.get("LIFECYCLE_PROBE_HANDLER")
_runtime = find_runtime()
try:
    _function = load_handler(_spec, _runtime, imported_by_runtime(_runtime))
    _fault = returned_fault(_function, _runtime)
    if _fault is not None:
        # A runtime before awslambdaric 2.1.0 returned its fault handler instead of raising:
        # INIT failed. It stays the handler, unwrapped: the runtime raises the fault at
        # each invocation, as without the probe.
        export_init_failure(_fault, _spec, _runtime)
        handler = _function
    else:
        with probe_work():  # the sinks' modules are the probe's imports, not the function's
            handler = probe(_function)
        init_resolved()
except BaseException as _failure:
    if at_interpreter_startup():
        # Imported by a sitecustomize (the OpenTelemetry layer's instrumentor): the runtime
        # resolves the handler again after it, and that attempt is the INIT's.
        defer_init_failure(_failure, _spec, _runtime)
    else:
        export_init_failure(_failure, _spec, _runtime)
    _traceback = runtime_traceback(_failure, _runtime)
    if sys.version_info >= (3, 11):
        # A bare raise adds no frame of this module: the runtime sees its own frames, the
        # import machinery's, then the function's, as it would without the probe.
        _failure.__traceback__ = _traceback
        raise
    # Before 3.11 a bare raise keeps the traceback it was caught with: this module's frame
    # is the one left between the import machinery and the function's frames.
    raise _failure.with_traceback(_traceback)  # noqa: B904 - the same exception, re-raised
