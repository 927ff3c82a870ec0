"""The local Lambda: a faithful execution-environment emulator (test bed and demo engine).

Each execution environment is a real runtime process, ``python -m awslambdaric
module.handler`` (AWS's own Runtime Interface Client), talking to its own Runtime API,
Extensions API and Telemetry API endpoint on 127.0.0.1. Between invocations an
environment is frozen (SIGSTOP) and thawed (SIGCONT) for the next; concurrent requests
scale out to new environments; idle environments are reaped; a timed-out invocation kills
its environment; on-demand, provisioned-concurrency, proactive and snap-start
initialisation are available; ``FunctionConfig(max_concurrency=N)`` gives Lambda
Managed Instances (N worker processes per environment, each with its own INIT, serving
concurrently, never frozen). The emulator records its own ground truth
(:class:`InvocationResult`, :class:`EnvironmentInfo`) for tests to compare against.

    from lifecycle_probe.emulator import FunctionConfig, LocalLambda

    with LocalLambda(FunctionConfig("app.handler", "src")) as local_lambda:
        first = local_lambda.invoke({"hello": "world"})   # cold
        second = local_lambda.invoke({})                  # warm, same environment

Only the standard library and ``awslambdaric`` are used; the probe's runtime path
never imports this package.

Names are loaded on first use: pytest imports this package at start-up in every project
that has the probe installed (to reach the ``local_lambda`` fixture's plugin), and the
emulator (HTTP servers, threads, ``ctypes``) waits for the first local Lambda.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lifecycle_probe.emulator.function import (
        INIT_TYPES,
        ON_DEMAND,
        PROACTIVE,
        PROVISIONED_CONCURRENCY,
        SNAP_START,
        FunctionConfig,
    )
    from lifecycle_probe.emulator.local_lambda import EmulatorError, EmulatorTimeout, LocalLambda
    from lifecycle_probe.emulator.process import process_state
    from lifecycle_probe.emulator.truth import (
        COLD,
        ERROR,
        OK,
        PROVISIONED,
        RESTORED,
        TIMEOUT,
        WARM,
        EnvironmentInfo,
        InvocationResult,
    )

__all__ = [
    "COLD",
    "ERROR",
    "INIT_TYPES",
    "OK",
    "ON_DEMAND",
    "PROACTIVE",
    "PROVISIONED",
    "PROVISIONED_CONCURRENCY",
    "RESTORED",
    "SNAP_START",
    "TIMEOUT",
    "WARM",
    "EmulatorError",
    "EmulatorTimeout",
    "EnvironmentInfo",
    "FunctionConfig",
    "InvocationResult",
    "LocalLambda",
    "process_state",
]

_FUNCTION = "lifecycle_probe.emulator.function"
_LOCAL_LAMBDA = "lifecycle_probe.emulator.local_lambda"
_TRUTH = "lifecycle_probe.emulator.truth"

# Each name of __all__ and the module that defines it.
_LAZY = {
    "COLD": _TRUTH,
    "ERROR": _TRUTH,
    "INIT_TYPES": _FUNCTION,
    "OK": _TRUTH,
    "ON_DEMAND": _FUNCTION,
    "PROACTIVE": _FUNCTION,
    "PROVISIONED": _TRUTH,
    "PROVISIONED_CONCURRENCY": _FUNCTION,
    "RESTORED": _TRUTH,
    "SNAP_START": _FUNCTION,
    "TIMEOUT": _TRUTH,
    "WARM": _TRUTH,
    "EmulatorError": _LOCAL_LAMBDA,
    "EmulatorTimeout": _LOCAL_LAMBDA,
    "EnvironmentInfo": _TRUTH,
    "FunctionConfig": _FUNCTION,
    "InvocationResult": _TRUTH,
    "LocalLambda": _LOCAL_LAMBDA,
    "process_state": "lifecycle_probe.emulator.process",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        # Also how ``from lifecycle_probe.emulator import truth`` reaches a submodule: the
        # import system imports it once the attribute is missing.
        raise AttributeError(f"module 'lifecycle_probe.emulator' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
