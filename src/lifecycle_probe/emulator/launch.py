"""What a runtime process is launched with: its command line and its environment variables.

Pure functions of the function's configuration and the environment's own facts (its
log stream, Runtime API address, init type, /tmp); spawning the process belongs to
:mod:`lifecycle_probe.emulator.process`, its lifecycle to
:mod:`lifecycle_probe.emulator.lifecycle`.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

from lifecycle_probe.emulator.function import INITIALIZATION_TYPE_VARIABLE, FunctionConfig

__all__ = ["FUNCTION_VERSION", "log_stream_name", "runtime_command", "runtime_variables"]

FUNCTION_VERSION = "$LATEST"

# Inherited variables that would mislead the runtime if the emulator itself runs inside
# Lambda-like surroundings; the environment's own values are always set explicitly.
_INHERITED_LAMBDA_PREFIXES = ("AWS_LAMBDA_", "_LAMBDA_", "_AWS_XRAY", "AWS_XRAY_")
_INHERITED_LAMBDA_NAMES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "AWS_EXECUTION_ENV",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    }
)


def log_stream_name() -> str:
    """A Lambda-like log stream name: ``YYYY/MM/DD/[$LATEST]<32 hex>``."""
    return time.strftime("%Y/%m/%d/", time.gmtime()) + f"[{FUNCTION_VERSION}]{uuid.uuid4().hex}"


def exec_wrapper(function: FunctionConfig) -> str | None:
    """The ``AWS_LAMBDA_EXEC_WRAPPER`` script, from the config or the function's variables."""
    if function.exec_wrapper is not None:
        return str(function.exec_wrapper)
    return function.env.get("AWS_LAMBDA_EXEC_WRAPPER") or None


# Exec wrappers exist on Lambda's managed runtimes only, whose bootstrap reads the handler
# from _HANDLER once the wrapper has run (a wrapper may change it: the layer's moves it to
# LIFECYCLE_PROBE_HANDLER). So does this one; then it runs awslambdaric's own entry point
# as ``python -m awslambdaric HANDLER`` does.
_MANAGED_RUNTIME_BOOTSTRAP = (
    "import os; from awslambdaric.__main__ import main; main(['bootstrap', os.environ['_HANDLER']])"
)


def runtime_command(function: FunctionConfig) -> list[str]:
    """The runtime command: as a container image starts awslambdaric, with the handler as
    its argument; behind ``AWS_LAMBDA_EXEC_WRAPPER``, as a managed runtime starts it, the
    handler read from ``_HANDLER`` as the wrapper left it."""
    wrapper = exec_wrapper(function)
    if wrapper:
        return [wrapper, sys.executable, "-c", _MANAGED_RUNTIME_BOOTSTRAP]
    return [sys.executable, "-m", "awslambdaric", function.handler]


def runtime_variables(
    function: FunctionConfig,
    *,
    init_type: str,
    log_stream: str,
    runtime_api: str,
    tmp_dir: Path,
) -> dict[str, str]:
    """The process environment: the emulator's own, then the function's, then Lambda's."""
    fn = function
    variables = {
        name: value
        for name, value in os.environ.items()
        if name not in _INHERITED_LAMBDA_NAMES and not name.startswith(_INHERITED_LAMBDA_PREFIXES)
    }
    variables.update(fn.env)
    python_path = [str(fn.task_root)]
    if variables.get("PYTHONPATH"):
        python_path.append(variables["PYTHONPATH"])
    variables.update(
        {
            "_HANDLER": fn.handler,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python{}.{}".format(*sys.version_info[:2]),
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": FUNCTION_VERSION,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": fn.log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": INITIALIZATION_TYPE_VARIABLE[init_type],
            "AWS_LAMBDA_RUNTIME_API": runtime_api,
            "AWS_REGION": fn.region,
            "AWS_DEFAULT_REGION": fn.region,
            "LAMBDA_TASK_ROOT": str(fn.task_root),
            "PYTHONPATH": os.pathsep.join(python_path),
        }
    )
    if "TMPDIR" not in fn.env:  # a function's own setting wins
        variables["TMPDIR"] = str(tmp_dir)
    wrapper = exec_wrapper(fn)
    if wrapper:
        variables["AWS_LAMBDA_EXEC_WRAPPER"] = wrapper
    return variables
