"""The function under emulation: its handler, code, configuration and init types."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "INITIALIZATION_TYPE_VARIABLE",
    "INIT_TYPES",
    "MANAGED_INSTANCES_INITIALIZATION_TYPE",
    "ON_DEMAND",
    "PROACTIVE",
    "PROVISIONED_CONCURRENCY",
    "SNAP_START",
    "FunctionConfig",
]

ON_DEMAND: Final = "on-demand"
"""An environment initialised because a request found no idle one."""
PROVISIONED_CONCURRENCY: Final = "provisioned-concurrency"
"""An environment initialised ahead of demand for provisioned concurrency."""
PROACTIVE: Final = "proactive"
"""An on-demand environment that Lambda initialised ahead of demand (invoked later)."""
SNAP_START: Final = "snap-start"
"""An environment restored from a snapshot taken after INIT."""

INIT_TYPES: Final = (ON_DEMAND, PROVISIONED_CONCURRENCY, PROACTIVE, SNAP_START)
"""Every environment init type the emulator records."""

FUNCTION_INIT_TYPES: Final = (ON_DEMAND, SNAP_START)
"""Init types a function can use when a request scales it out."""

INITIALIZATION_TYPE_VARIABLE: Final = {
    ON_DEMAND: "on-demand",
    PROVISIONED_CONCURRENCY: "provisioned-concurrency",
    # Lambda gives proactively initialised environments the on-demand value.
    PROACTIVE: "on-demand",
    SNAP_START: "snap-start",
}
"""The ``AWS_LAMBDA_INITIALIZATION_TYPE`` an environment of each init type sees."""

MANAGED_INSTANCES_INITIALIZATION_TYPE: Final = "lambda-managed-instances"
"""The ``AWS_LAMBDA_INITIALIZATION_TYPE`` Lambda Managed Instances give every environment."""


@dataclass(frozen=True)
class FunctionConfig:
    """A Lambda function as the emulator runs it.

    ``handler`` is ``module.function`` as in Lambda's handler setting, importable from
    ``code_dir`` (the environment's ``LAMBDA_TASK_ROOT`` and working directory).
    ``env`` holds the function's own environment variables. ``timeout_s`` bounds each
    invocation, ``memory_mb`` is reported in ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``.
    ``exec_wrapper`` is the ``AWS_LAMBDA_EXEC_WRAPPER`` script (run with the runtime
    command as its arguments; the runtime then reads the handler from ``_HANDLER``, as
    Lambda's managed runtimes do, so a wrapper may change it). ``init_type`` is how the
    function scales out when a request finds no idle environment: ``"on-demand"`` or
    ``"snap-start"``.
    """

    handler: str
    code_dir: str | os.PathLike[str]
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 3.0
    memory_mb: int = 128
    function_name: str = "lifecycle-demo"
    region: str = "us-east-1"
    exec_wrapper: str | os.PathLike[str] | None = None
    init_type: str = ON_DEMAND
    account_id: str = "123456789012"
    # Lambda Managed Instances: None for Lambda (default); N runs N worker processes per
    # environment (``AWS_LAMBDA_MAX_CONCURRENCY``). See ``ManagedInstancesEnvironment``.
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if "." not in self.handler:
            raise ValueError(f"handler must be 'module.function', got {self.handler!r}")
        if self.init_type not in FUNCTION_INIT_TYPES:
            raise ValueError(
                f"init_type must be one of {', '.join(FUNCTION_INIT_TYPES)}, "
                f"got {self.init_type!r} (provisioned and proactive environments are "
                "created with LocalLambda.provision() / pre_initialise())"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s!r}")
        code_dir = Path(self.code_dir).resolve()
        if not code_dir.is_dir():
            raise ValueError(f"code_dir is not a directory: {code_dir}")
        # Frozen dataclass: normalise in place once, so every environment sees the same.
        object.__setattr__(self, "code_dir", code_dir)
        object.__setattr__(self, "env", dict(self.env))
        if self.exec_wrapper is not None:
            object.__setattr__(self, "exec_wrapper", str(Path(self.exec_wrapper).resolve()))

    @property
    def task_root(self) -> Path:
        """The code directory as an absolute path (``LAMBDA_TASK_ROOT``)."""
        return Path(self.code_dir)

    @property
    def function_arn(self) -> str:
        """The ARN the runtime is told it was invoked as."""
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def log_group(self) -> str:
        """``/aws/lambda/NAME``."""
        return f"/aws/lambda/{self.function_name}"
