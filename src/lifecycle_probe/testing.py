"""Helpers for testing code that uses ``lifecycle_probe`` (and for the probe's own tests).

- :class:`FakeContext`: a Lambda context object with the attributes handlers read.
- :func:`fresh_environment`: make this process look like a newly initialised environment.
- :func:`capture_records`: collect every record exported in a ``with`` block.
- :class:`MemorySink`: an in-memory sink to pass around yourself.

The ``local_lambda`` pytest fixture (local Lambdas running real ``awslambdaric`` runtime
processes, all closed at teardown) needs no import: installing the package registers it
with pytest (the ``pytest11`` entry point :mod:`lifecycle_probe.emulator.pytest_plugin`).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager

from lifecycle_probe._safe import forget_warnings
from lifecycle_probe.config import Config
from lifecycle_probe.environment import Environment, start_new_environment
from lifecycle_probe.imports import active_tracer
from lifecycle_probe.installation import reset_installation
from lifecycle_probe.records import (
    COLD,
    PROACTIVE,
    PROVISIONED,
    RESTORED,
    SOURCE_PROCESS,
    SOURCE_RUNTIME,
)
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

    from lifecycle_probe.records import InitRecord, InvocationRecord

__all__ = ["FakeContext", "MemorySink", "capture_records", "fresh_environment"]

# The start types a fresh environment's first invocation can have (``warm`` is never
# first), and the values of ``AWS_LAMBDA_INITIALIZATION_TYPE`` that give each: the first
# is the one set unless ``environ`` names another of them (a Managed Instances worker
# starts cold or proactive too). One vocabulary for users, the one of ``lifecycle.start``,
# ``current().start`` and ``MemorySink.starts``; the variable's values are Lambda's.
_INIT_TYPES_OF_START = {
    COLD: ("on-demand", "lambda-managed-instances"),
    PROVISIONED: ("provisioned-concurrency",),
    PROACTIVE: ("on-demand", "lambda-managed-instances"),
    RESTORED: ("snap-start",),
}
_FRESH_STARTS = tuple(_INIT_TYPES_OF_START)
# How long ago INIT ended for ``start="proactive"`` unless told: well past the default
# proactive gap (LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS, 1 s).
_PROACTIVE_INIT_ENDED_S_AGO = 5.0
# The longest INIT duration and INIT age a fresh environment takes, in seconds: a day, as
# the proactive gap's own bound. Past it a value is a mistake (a value in ms, 1e300), and
# nanoseconds of it would overflow or make no sense.
_MAX_SECONDS = 24 * 3600.0


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
    # str, not a Literal: tests pass it from parametrize and dicts, where a Literal would
    # not type-check; a wrong value is a ValueError that names the right one.
    start: str = COLD,
    init_duration_s: float = 0.25,
    init_ended_s_ago: float | None = None,
    exact: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Environment:
    """Make this process a newly initialised environment and return it.

    ``start`` is the start type its first invocation gets, in the words of
    ``lifecycle.start``: ``"cold"``, ``"provisioned"`` (provisioned concurrency),
    ``"proactive"`` (INIT ended long before the first event) or ``"restored"``
    (SnapStart); anything else is a ``ValueError``. INIT is taken to have lasted
    ``init_duration_s`` and ended ``init_ended_s_ago`` seconds ago (default: just now; for
    ``"proactive"`` 5 s, or 1 s past a longer gap set by
    ``LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS``), with exact signals (as under a real
    runtime) unless ``exact`` is False, in which case INIT end is left for the probe to
    estimate. Only that gap tells ``"cold"`` from ``"proactive"``: an ``init_ended_s_ago``
    on the wrong side of it for the start asked for is a ``ValueError``. Both durations
    are seconds from 0 to a day; anything else (negative, NaN, infinite, a value in ms by
    mistake) is a ``ValueError`` naming the parameter. ``environ`` stands for the Lambda
    variables (``AWS_LAMBDA_INITIALIZATION_TYPE`` follows from ``start``). Warnings
    already given are forgotten, and so is any earlier ``install()``, as in a new runtime
    process.
    """
    init_types = _INIT_TYPES_OF_START.get(start)
    if init_types is None:
        raise ValueError(_unknown_start(start))
    init_duration_s = _seconds("init_duration_s", init_duration_s)
    if init_ended_s_ago is not None:
        init_ended_s_ago = _seconds("init_ended_s_ago", init_ended_s_ago)
    env = dict(environ) if environ is not None else {}
    init_type = env.setdefault("AWS_LAMBDA_INITIALIZATION_TYPE", init_types[0])
    if init_type not in init_types:
        raise ValueError(
            f"fresh_environment(start={start!r}) with AWS_LAMBDA_INITIALIZATION_TYPE="
            f"{init_type!r} in environ: that variable would give another start; leave it "
            f"out and choose the start with start= (one of {', '.join(_FRESH_STARTS)})"
        )
    if start == PROACTIVE and not exact:
        # An estimated INIT end is the first invocation itself: no gap, never proactive.
        raise ValueError("fresh_environment(start='proactive') needs exact=True")
    # The gap the probes take unless given the option: the variable's, or the default.
    # (Only that variable is read: resolving every variable here would warn about the
    # others' bad values now, and again from the probe once the warnings are forgotten.)
    gap_variable = "LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS"
    only_the_gap = {gap_variable: os.environ[gap_variable]} if gap_variable in os.environ else {}
    gap_s = Config.resolve(only_the_gap).proactive_init_gap_ms / 1000
    if init_ended_s_ago is None:
        init_ended_s_ago = (
            max(_PROACTIVE_INIT_ENDED_S_AGO, gap_s + 1) if start == PROACTIVE else 0.0
        )
    elif exact and start in (COLD, PROACTIVE):
        # Only the gap tells a cold start from a proactive one: an INIT age on the wrong
        # side of it would silently give the other start.
        _check_gap(start, init_ended_s_ago, gap_s)
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


def _seconds(name: str, value: float) -> float:
    """``value`` as a float of seconds from 0 to a day; a ValueError naming ``name`` else."""
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"fresh_environment({name}={value!r}): a number of seconds") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_SECONDS:
        raise ValueError(
            f"fresh_environment({name}={value!r}): seconds from 0 to {_MAX_SECONDS:.0f} "
            "(a day), finite"
        )
    return seconds


def _check_gap(start: str, init_ended_s_ago: float, gap_s: float) -> None:
    if start == COLD and init_ended_s_ago >= gap_s:
        raise ValueError(
            f"fresh_environment(start='cold', init_ended_s_ago={init_ended_s_ago:g}): INIT "
            f"ended at least the proactive gap ago ({gap_s:g} s, "
            "LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS), so the first invocation would be a "
            "proactive start; use start='proactive', or a smaller init_ended_s_ago"
        )
    if start == PROACTIVE and init_ended_s_ago <= gap_s:
        raise ValueError(
            f"fresh_environment(start='proactive', init_ended_s_ago={init_ended_s_ago:g}): "
            f"INIT must have ended longer ago than the proactive gap ({gap_s:g} s, "
            "LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS), or the first invocation is a cold start"
        )


def _unknown_start(start: object) -> str:
    message = f"fresh_environment(start={start!r}): start is one of {', '.join(_FRESH_STARTS)}"
    # The variable's values are the other vocabulary a user may reach for: point across.
    for name, init_types in _INIT_TYPES_OF_START.items():
        if start in init_types[:1] and name != PROACTIVE:
            return f"{message} (AWS_LAMBDA_INITIALIZATION_TYPE={start!r} is start={name!r})"
    if start == "warm":
        return f"{message} (a fresh environment's first invocation is never warm)"
    return message


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
