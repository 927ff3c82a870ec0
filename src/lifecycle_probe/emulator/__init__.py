"""The local Lambda: a faithful execution-environment emulator (test bed and demo engine).

Each execution environment is a real runtime process, ``python -m awslambdaric
module.handler`` (AWS's own Runtime Interface Client), talking to its own Runtime API
and Extensions API endpoint on 127.0.0.1. Between invocations an environment is frozen
(SIGSTOP) and thawed (SIGCONT) for the next; concurrent requests scale out to new
environments; idle environments are reaped; a timed-out invocation kills its
environment; on-demand, provisioned-concurrency, proactive and snap-start
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
"""

from __future__ import annotations

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
