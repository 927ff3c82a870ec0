"""Helpers for testing code that uses ``lifecycle_probe`` (and for the probe's own tests).

- :class:`FakeContext`: a Lambda context object with the attributes handlers read.
- :func:`fresh_environment`: make this process look like a newly initialised environment.
- :func:`capture_records`: collect every record exported in a ``with`` block.
- :class:`MemorySink`: an in-memory sink to pass around yourself.
- ``local_lambda``: a pytest fixture making local Lambdas (real ``awslambdaric`` runtime
  processes) that are all closed at teardown; in a ``conftest.py``:
  ``from lifecycle_probe.testing import local_lambda``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from lifecycle_probe._safe import forget_warnings
from lifecycle_probe.environment import Environment, start_new_environment
from lifecycle_probe.imports import active_tracer
from lifecycle_probe.installation import reset_installation
from lifecycle_probe.records import SOURCE_PROCESS, SOURCE_RUNTIME
from lifecycle_probe.resources import forget as forget_resources
from lifecycle_probe.sinks import (
    Sink,
    add_process_sink,
    forget_built_sinks,
    remove_process_sink,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from lifecycle_probe.emulator.pytest_plugin import local_lambda
    from lifecycle_probe.records import InitRecord, InvocationRecord

__all__ = ["FakeContext", "MemorySink", "capture_records", "fresh_environment", "local_lambda"]


def __getattr__(name: str) -> object:
    # The fixture module imports pytest and the emulator: load them only when asked for.
    if name == "local_lambda":
        from lifecycle_probe.emulator.pytest_plugin import local_lambda

        return local_lambda
    raise AttributeError(f"module 'lifecycle_probe.testing' has no attribute {name!r}")


class FakeContext:
    """A stand-in for the Lambda context: the attributes and method handlers use."""

    def __init__(
        self,
        aws_request_id: str = "00000000-0000-4000-8000-000000000000",
        function_name: str = "test-function",
        function_version: str = "$LATEST",
        memory_limit_in_mb: int = 128,
        invoked_function_arn: str | None = None,
        timeout_s: float = 3.0,
        log_group_name: str | None = None,
        log_stream_name: str = "2026/01/01/[$LATEST]00000000000000000000000000000000",
    ) -> None:
        self.aws_request_id = aws_request_id
        self.function_name = function_name
        self.function_version = function_version
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = invoked_function_arn or (
            f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self.log_group_name = log_group_name or f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before this fake invocation's deadline."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def fresh_environment(
    *,
    init_type: str = "on-demand",
    init_duration_s: float = 0.25,
    init_ended_s_ago: float = 0.0,
    exact: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Environment:
    """Make this process a newly initialised environment and return it.

    INIT is taken to have lasted ``init_duration_s`` and ended ``init_ended_s_ago`` seconds
    ago, with exact signals (as under a real runtime) unless ``exact`` is False, in which
    case INIT end is left for the probe to estimate. Warnings already given are forgotten,
    and so is any earlier ``install()``, as in a new runtime process.
    """
    env = dict(environ) if environ is not None else {}
    env.setdefault("AWS_LAMBDA_INITIALIZATION_TYPE", init_type)
    now_ns = time.time_ns()
    end_ns = now_ns - int(init_ended_s_ago * 1e9)
    environment = start_new_environment(
        env,
        init_start_ns=end_ns - int(init_duration_s * 1e9),
        init_start_source=SOURCE_PROCESS,
    )
    if exact:
        environment.mark_init_end(SOURCE_RUNTIME, end_ns)
    forget_warnings()
    reset_installation()
    forget_built_sinks()
    forget_resources()
    tracer = active_tracer()
    if tracer is not None:  # imports recorded so far belonged to the previous environment
        tracer.take_init()
        tracer.take_later()
    return environment


class MemorySink(Sink):
    """Keeps every exported record in :attr:`records`."""

    name = "memory"

    def __init__(self) -> None:
        self.records: list[InvocationRecord] = []

    def export(self, record: InvocationRecord) -> None:
        self.records.append(record)

    @property
    def inits(self) -> list[InitRecord]:
        """The INIT records carried by the exported invocations."""
        return [r.init for r in self.records if r.init is not None]

    @property
    def starts(self) -> list[str | None]:
        """The start type of each exported invocation, in order."""
        return [r.facts.start for r in self.records]


@contextmanager
def capture_records() -> Iterator[MemorySink]:
    """Collect the records every probe in this process exports inside the block."""
    sink = MemorySink()
    add_process_sink(sink)
    try:
        yield sink
    finally:
        remove_process_sink(sink)
