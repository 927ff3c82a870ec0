"""``lifecycle-probe emulate HANDLER``: serve a stream of events from the local Lambda.

Wired into the ``lifecycle-probe`` console script by :func:`add_arguments` and
:func:`run`; also runnable as ``python -m lifecycle_probe.emulator``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lifecycle_probe.emulator import truth
from lifecycle_probe.emulator.function import (
    INIT_TYPES,
    ON_DEMAND,
    PROACTIVE,
    PROVISIONED_CONCURRENCY,
    SNAP_START,
    FunctionConfig,
)
from lifecycle_probe.emulator.local_lambda import EmulatorError, LocalLambda
from lifecycle_probe.emulator.truth import InvocationResult

__all__ = ["add_arguments", "main", "missing_runtime_client", "run"]

PROG = "lifecycle-probe emulate"
# Above the probe's default proactive gap (1 s): a proactive start is one nobody waited for.
PROACTIVE_PAUSE_S = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulate`` arguments to ``parser``."""
    parser.add_argument("handler", metavar="HANDLER", help="the handler, as module.function")
    parser.add_argument(
        "--events",
        metavar="FILE",
        help="JSON lines, one event per line ('-': stdin; default: one {} event)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        metavar="N",
        help="requests in flight at once (default: 1)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=300.0,
        metavar="S",
        help="reap environments idle this long (default: 300)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=3.0,
        metavar="S",
        help="function timeout per invocation (default: 3)",
    )
    parser.add_argument(
        "--init-type",
        choices=INIT_TYPES,
        default=ON_DEMAND,
        help="how environments are initialised (default: on-demand)",
    )
    parser.add_argument(
        "--provisioned",
        type=_non_negative_int,
        metavar="N",
        help="environments initialised ahead of demand: proactive ones for "
        "--init-type proactive, held snapshots for snap-start, provisioned "
        "ones otherwise (default: --concurrency for provisioned-concurrency "
        "and proactive, else 0)",
    )
    parser.add_argument(
        "--ahead-pause",
        type=_non_negative_float,
        metavar="S",
        help="how long environments initialised ahead of demand wait for their first "
        f"event (default: {PROACTIVE_PAUSE_S:g} for --init-type proactive, which a "
        "proactive start needs: Lambda hands a waiting caller's event over within "
        "milliseconds of INIT, a proactively initialised environment waits; else 0)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_key_value,
        help="a function environment variable (repeatable)",
    )
    parser.add_argument(
        "--code-dir",
        default=".",
        metavar="DIR",
        help="the function's code directory (default: the current one)",
    )
    parser.add_argument(
        "--output", metavar="FILE", help="write one JSON line per request here (default: stdout)"
    )
    parser.add_argument(
        "--memory",
        type=_positive_int,
        default=128,
        metavar="MB",
        help="AWS_LAMBDA_FUNCTION_MEMORY_SIZE (default: 128)",
    )
    parser.add_argument(
        "--function-name",
        default="lifecycle-demo",
        metavar="NAME",
        help="AWS_LAMBDA_FUNCTION_NAME (default: lifecycle-demo)",
    )
    parser.add_argument("--region", default="us-east-1", help="AWS_REGION (default: us-east-1)")
    parser.add_argument("--exec-wrapper", metavar="FILE", help="AWS_LAMBDA_EXEC_WRAPPER script")
    parser.add_argument(
        "--snapshot-pause",
        type=_non_negative_float,
        default=0.2,
        metavar="S",
        help="snap-start: how long the snapshot is held before restore (default: 0.2)",
    )
    parser.add_argument(
        "--log-dir", metavar="DIR", help="keep each environment's output here (default: discarded)"
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def read_events(source: str | None) -> list[Any]:
    """The events of a JSON-lines file (``-``: stdin; None: a single ``{}``), each as the
    JSON bytes sent to the function. A file that cannot be read as such raises
    ``OSError`` or ``ValueError`` with one line to show."""
    if source is None:
        return [{}]
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{source}: not UTF-8 text (JSON lines expected)") from None
    except OSError as exc:
        raise OSError(f"{source}: {exc.strerror or type(exc).__name__}") from None
    events: list[Any] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            # Encoded here, once: an event nested deeper than Python's recursion limit
            # allows raises RecursionError, in json.loads or (nested a little less) in
            # the json.dumps that would otherwise run in the middle of the requests.
            events.append(json.dumps(json.loads(line)).encode())
        except RecursionError:
            raise ValueError(f"{source}:{number}: JSON nested too deeply") from None
        except ValueError as exc:
            raise ValueError(f"{source}:{number}: not JSON: {exc}") from None
    return events


@contextlib.contextmanager
def _open_output(path: str | None) -> Iterator[IO[str]]:
    if path is None or path == "-":
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as output:
        yield output


class _Progress:
    """Counts results; redraws one status line on stderr when it is a terminal."""

    def __init__(self, total: int, output: IO[str], *, show: bool) -> None:
        self.total = total
        self._output = output
        self._show = show
        self._lock = threading.Lock()
        self.results: list[InvocationResult] = []

    def add(self, result: InvocationResult, out: IO[str]) -> None:
        with self._lock:
            self.results.append(result)
            out.write(json.dumps(result.to_output(), default=str) + "\n")
            out.flush()
            if self._show:
                self._output.write(f"\r\x1b[K{self.line()}")
                self._output.flush()

    def line(self) -> str:
        results = self.results
        return (
            f"{len(results)}/{self.total} requests · "
            f"{len({r.environment for r in results})} environments · "
            f"{sum(r.cold for r in results)} cold · "
            f"{sum(r.outcome == truth.ERROR for r in results)} errors · "
            f"{sum(r.outcome == truth.TIMEOUT for r in results)} timeouts"
        )

    def finish(self) -> None:
        if self._show:
            self._output.write("\r\x1b[K")
            self._output.flush()


def summary(results: list[InvocationResult], environments: int, elapsed_s: float) -> str:
    """The end-of-run summary."""
    by_start: dict[str, int] = {}
    for result in results:
        by_start[result.start_type_truth] = by_start.get(result.start_type_truth, 0) + 1
    starts = ", ".join(f"{count} {name}" for name, count in sorted(by_start.items()))
    return (
        f"{PROG}: {len(results)} requests in {elapsed_s:.2f} s\n"
        f"  environments: {environments}\n"
        f"  cold starts:  {sum(r.cold for r in results)}"
        + (f" (starts: {starts})" if starts else "")
        + "\n"
        f"  errors:       {sum(r.outcome == truth.ERROR for r in results)}\n"
        f"  timeouts:     {sum(r.outcome == truth.TIMEOUT for r in results)}\n"
    )


def missing_runtime_client(prog: str) -> str | None:
    """The one line to print when the runtime processes cannot start here, else None.

    Every environment is ``sys.executable -m awslambdaric``: without the ``emulator``
    extra each would die at start, which the local Lambda can only report as failed INITs
    one by one (the demo marked every row DISAGREES, then failed on a missing log; emulate
    said ``errors: 1``). Asked before anything starts, like ``report --cloudwatch`` does
    for boto3; ``find_spec`` looks the package up without importing it.
    """
    from importlib.util import find_spec

    try:
        if find_spec("awslambdaric") is not None:
            return None
    except (ImportError, ValueError):  # a broken installation is as good as none
        pass
    return (
        f"{prog}: error: the local Lambda needs awslambdaric (AWS's runtime interface "
        "client), which is not installed here: pip install 'lifecycle-probe[emulator]'"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``emulate``: 0 when every event was served (whatever its outcome), 2 on bad
    input or without awslambdaric, 1 if the emulator failed, 130 if interrupted."""
    stderr = sys.stderr
    missing = missing_runtime_client(PROG)
    if missing is not None:
        stderr.write(missing + "\n")
        return 2
    try:
        events = read_events(args.events)
        function = FunctionConfig(
            args.handler,
            args.code_dir,
            env=dict(args.env),
            timeout_s=args.timeout,
            memory_mb=args.memory,
            function_name=args.function_name,
            region=args.region,
            exec_wrapper=args.exec_wrapper,
            init_type=SNAP_START if args.init_type == SNAP_START else ON_DEMAND,
        )
    except (OSError, ValueError) as exc:
        stderr.write(f"{PROG}: error: {exc}\n")
        return 2

    ahead = args.provisioned
    if ahead is None:
        ahead = args.concurrency if args.init_type in (PROVISIONED_CONCURRENCY, PROACTIVE) else 0
    ahead_type = args.init_type if args.init_type != ON_DEMAND else PROVISIONED_CONCURRENCY
    started = time.monotonic()
    progress = _Progress(len(events), stderr, show=stderr.isatty())
    try:
        with (
            LocalLambda(
                function,
                idle_timeout_s=args.idle_timeout,
                snapshot_pause_s=args.snapshot_pause,
                log_dir=args.log_dir,
            ) as emulator,
            _open_output(args.output) as out,
        ):
            if ahead:
                emulator.pre_initialise(ahead, ahead_type)
                pause = args.ahead_pause
                if pause is None:
                    pause = PROACTIVE_PAUSE_S if args.init_type == PROACTIVE else 0.0
                emulator.freeze_for(pause)
            emulator.invoke_many(
                events, args.concurrency, on_result=lambda result: progress.add(result, out)
            )
            environments = len(emulator.environments)
    except KeyboardInterrupt:
        progress.finish()
        stderr.write(f"{PROG}: interrupted\n")
        return 130
    except (EmulatorError, OSError) as exc:
        progress.finish()
        stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    progress.finish()
    stderr.write(summary(progress.results, environments, time.monotonic() - started))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run (the entry point of ``python -m lifecycle_probe.emulator``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve events from a local Lambda: real awslambdaric runtime processes, "
        "frozen between invocations, scaled out under concurrency, reaped when idle.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
