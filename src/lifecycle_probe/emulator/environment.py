"""One execution environment: a real runtime process, its Runtime API, its lifecycle.

States (``ExecutionEnvironment.state``)::

    init ──> idle <──────────────── post-invoke
     │        │   (thaw, deliver)        ^
     │        └──────> invoking ─────────┘ (response or error posted)
     └─> snapshot ──> restoring ──> idle          (snap-start)
    any ──> shutdown ──> dead

An environment is *settled* when the runtime has asked for its next invocation (or, at
the end of a snap-start INIT, for ``restore/next``) and every registered extension has
asked for its next event. Only then is it frozen (SIGSTOP on its process group), as on
Lambda; it is thawed (SIGCONT) right before its next event is delivered.

All state lives under one condition variable per environment. Calls from the Runtime
API block on it (``invocation/next`` until an event is delivered); the local Lambda's
threads drive the environment through :meth:`invoke`, :meth:`shutdown` and :meth:`kill`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from lifecycle_probe.emulator import truth
from lifecycle_probe.emulator.function import (
    INITIALIZATION_TYPE_VARIABLE,
    MANAGED_INSTANCES_INITIALIZATION_TYPE,
    PROVISIONED_CONCURRENCY,
    SNAP_START,
    FunctionConfig,
)
from lifecycle_probe.emulator.process import (
    Spawner,
    signal_group,
    wait_exited,
    wait_stopped,
)
from lifecycle_probe.emulator.runtime_api import ACCEPTED, Peer, Reply, RuntimeApiServer

INIT = "init"
SNAPSHOT = "snapshot"
RESTORING = "restoring"
IDLE = "idle"
INVOKING = "invoking"
POST_INVOKE = "post-invoke"
SHUTDOWN = "shutdown"
DEAD = "dead"

FUNCTION_VERSION = "$LATEST"
ALLOWED_EXTENSION_EVENTS = frozenset({"INVOKE", "SHUTDOWN"})

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
# How long a runtime that reported an INIT error gets to exit by itself.
_INIT_ERROR_EXIT_GRACE_S = 1.0
# The least time a runtime gets, after its response, to ask for its next event.
_SETTLE_SLACK_S = 0.25


def log_stream_name() -> str:
    """A Lambda-like log stream name: ``YYYY/MM/DD/[$LATEST]<32 hex>``."""
    return time.strftime("%Y/%m/%d/", time.gmtime()) + f"[{FUNCTION_VERSION}]{uuid.uuid4().hex}"


def new_trace_id() -> str:
    """A sampled X-Ray trace header: ``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1``."""
    root = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
    return f"Root={root};Parent={uuid.uuid4().hex[:16]};Sampled=1"


def parse_payload(data: bytes | None) -> Any:
    """Bytes posted by the runtime as JSON if they are JSON, else as text."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", errors="replace")


@dataclass
class Invocation:
    """One event on its way through an environment (mutable, guarded by its condition)."""

    request_id: str
    body: bytes
    trace_id: str
    client_context: str | None = None
    cognito_identity: str | None = None
    deadline_ms: int = 0
    delivered_ns: int = 0
    end_ns: int = 0
    done: bool = False
    response: bytes | None = None
    error: bytes | None = None
    error_type: str | None = None
    # Lambda Managed Instances: the worker process that took it, whether it was that
    # worker's first, and how many times the worker had asked for work when it took it.
    worker_pid: int | None = None
    worker_first: bool = False
    worker_asks: int = 0
    arrived_ns: int = 0  # when it reached the environment (Managed Instances)
    worker_ready_ns: int | None = None  # the worker's first invocation/next


@dataclass(frozen=True)
class Served:
    """What happened to one invocation in an environment (the pool adds the rest)."""

    cold: bool
    outcome: str
    delivered_ns: int
    end_ns: int
    response: Any = None
    error: Any = None
    error_type: str | None = None
    init_duration_ms: float | None = None
    worker_pid: int | None = None
    # Managed Instances: the start type of a worker's first request (None: by init type).
    start_type: str | None = None


@dataclass
class _Extension:
    id: str
    name: str
    events: frozenset[str]
    parked: bool = False
    queue: deque[dict[str, Any]] = field(default_factory=deque)

    @property
    def settled(self) -> bool:
        return self.parked and not self.queue


class ExecutionEnvironment:
    """A runtime process (``python -m awslambdaric HANDLER``) and its Runtime API.

    Created in state ``init`` with its endpoint bound; :meth:`start` launches the
    process. ``claimed_by`` names the request that has claimed the environment (from
    claim until its response); a settled environment nobody has claimed is frozen.
    """

    # The states in which INIT is over (a snap-start environment waits in SNAPSHOT).
    _INIT_OVER_STATES: tuple[str, ...] = (IDLE, SNAPSHOT, DEAD)

    def __init__(
        self,
        env_id: str,
        function: FunctionConfig,
        init_type: str,
        *,
        log_dir: Path,
        spawner: Spawner,
        snapshot_pause_s: float,
        shutdown_grace_s: float = 0.5,
        claimed_by: str | None = None,
    ) -> None:
        self.id = env_id
        self.function = function
        self.init_type = init_type
        self.log_stream = log_stream_name()
        self.log_path = log_dir / f"{env_id}.log"
        # Its own /tmp, as on Lambda (TMPDIR, which tempfile and the probe honour); removed
        # when the process has exited.
        self.tmp_dir = log_dir / f"{env_id}.tmp"
        self._spawner = spawner
        self._snapshot_pause_s = snapshot_pause_s
        self._shutdown_grace_s = shutdown_grace_s
        self._cond = threading.Condition()
        self._server = RuntimeApiServer(self)
        self._process: Any = None
        self._watcher: threading.Thread | None = None
        self._exited = False

        self.pid: int | None = None
        self.state = INIT
        self.frozen = False
        self.claimed_by = claimed_by  # the request that has claimed it, if any
        self.spawn_start_ns = 0
        self.spawn_end_ns = 0
        self.first_next_ns: int | None = None
        self.init_done_ns: int | None = None
        self.restore_done_ns: int | None = None
        self.restored_next_ns: int | None = None
        self.last_freeze_ns: int | None = None
        self.last_thaw_ns: int | None = None
        self.idle_since = 0.0  # time.monotonic() of the last settle
        self.freezes = 0
        self.invocations = 0
        self.request_ids: list[str] = []
        self.init_error: Any = None
        self.init_error_type: str | None = None
        self.end_reason: str | None = None
        self.exit_status: int | None = None
        self.ended_ns: int | None = None

        self._extensions: list[_Extension] = []
        self._runtime_waiting = False  # the runtime is parked in invocation/next
        self._runtime_at_restore = False  # the runtime is parked in restore/next
        self._restore_requested = False
        self._snapshot_ready = 0.0  # time.monotonic() when the snapshot pause ends
        self._pending: Invocation | None = None  # delivered, not yet taken by the runtime
        self._current: Invocation | None = None  # delivered, no response yet
        self._end_reason_hint: str | None = None

    # -- process -----------------------------------------------------------------------

    @property
    def runtime_api(self) -> str:
        """``127.0.0.1:PORT``: this environment's ``AWS_LAMBDA_RUNTIME_API``."""
        return self._server.address

    def command(self) -> list[str]:
        """The runtime command, behind ``AWS_LAMBDA_EXEC_WRAPPER`` when one is set."""
        argv = [sys.executable, "-m", "awslambdaric", self.function.handler]
        wrapper = self._exec_wrapper()
        return [wrapper, *argv] if wrapper else argv

    def _exec_wrapper(self) -> str | None:
        if self.function.exec_wrapper is not None:
            return str(self.function.exec_wrapper)
        return self.function.env.get("AWS_LAMBDA_EXEC_WRAPPER") or None

    def environment_variables(self) -> dict[str, str]:
        """The process environment: the emulator's own, then the function's, then Lambda's."""
        fn = self.function
        variables = {
            name: value
            for name, value in os.environ.items()
            if name not in _INHERITED_LAMBDA_NAMES
            and not name.startswith(_INHERITED_LAMBDA_PREFIXES)
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
                "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream,
                "AWS_LAMBDA_INITIALIZATION_TYPE": INITIALIZATION_TYPE_VARIABLE[self.init_type],
                "AWS_LAMBDA_RUNTIME_API": self.runtime_api,
                "AWS_REGION": fn.region,
                "AWS_DEFAULT_REGION": fn.region,
                "LAMBDA_TASK_ROOT": str(fn.task_root),
                "PYTHONPATH": os.pathsep.join(python_path),
            }
        )
        if "TMPDIR" not in fn.env:  # a function's own setting wins
            variables["TMPDIR"] = str(self.tmp_dir)
        wrapper = self._exec_wrapper()
        if wrapper:
            variables["AWS_LAMBDA_EXEC_WRAPPER"] = wrapper
        return variables

    def start(self) -> None:
        """Start serving the Runtime API and launch the runtime process (INIT begins).

        Does nothing if the environment was killed before it started.
        """
        with contextlib.suppress(OSError):  # if it can't be created, spawning says why
            self.log_path.touch()
        with contextlib.suppress(OSError):  # without it, tempfile falls back to /tmp
            self.tmp_dir.mkdir(exist_ok=True)
        # Holding the condition while spawning keeps Runtime API calls (which may freeze
        # the process) waiting until the pid is known.
        with self._cond:
            if self.state == DEAD:
                return
            self._server.start()
            try:
                spawned = self._spawner.spawn(
                    self.command(),
                    cwd=self.function.task_root,
                    env=self.environment_variables(),
                    log_path=self.log_path,
                )
            except Exception as exc:
                self.init_error = {
                    "errorMessage": f"could not start the runtime: {type(exc).__name__}: {exc}",
                    "errorType": "Runtime.InvalidEntrypoint",
                }
                self.init_error_type = "Runtime.InvalidEntrypoint"
                self.spawn_start_ns = self.spawn_end_ns = time.time_ns()
                self._exited = True
                self._mark_dead_locked("init-error")
                return
            self._process = spawned.process
            self.pid = spawned.process.pid
            self.spawn_start_ns = spawned.spawn_start_ns
            self.spawn_end_ns = spawned.spawn_end_ns
        self._watcher = threading.Thread(target=self._watch, name=f"watch-{self.id}", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        assert self.pid is not None
        wait_exited(self.pid)
        with self._cond:
            self._exited = True
            # The leader is a zombie, so its process group id cannot be reused yet: kill
            # whatever the runtime started and left behind (SIGKILL also ends stopped ones).
            signal_group(self.pid, signal.SIGKILL)
        exit_status = self._process.wait()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        with self._cond:
            self.exit_status = exit_status
            if self.state != DEAD:
                self._mark_dead_locked(self._end_reason_hint or "exited")
            self._cond.notify_all()
        self._server.stop()

    def join(self, timeout_s: float = 5.0) -> None:
        """Wait for the process to be reaped and the endpoint closed."""
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout_s)

    # -- lifecycle helpers (call with the condition held) --------------------------------

    def _mark_dead_locked(self, reason: str) -> None:
        self.state = DEAD
        self.frozen = False
        self.claimed_by = None
        if self.end_reason is None:
            self.end_reason = reason
        if self.ended_ns is None:
            self.ended_ns = time.time_ns()
        if self._process is None:
            # Never started, so no watcher will close the endpoint.
            self._server.stop()
        self._cond.notify_all()

    def _kill_locked(self, reason: str) -> None:
        if self.state == DEAD:
            return
        self._end_reason_hint = reason
        if self._process is None:
            self._mark_dead_locked(reason)
            return
        if self.pid is not None and not self._exited:
            signal_group(self.pid, signal.SIGKILL)
        self.frozen = False
        # Dying, so not to be claimed; the watcher declares it dead once the process is
        # reaped, so that a dead environment always reports its exit status. SIGKILL ends
        # even a stopped process at once.
        self.state = SHUTDOWN
        self._cond.notify_all()
        if not self._wait_locked(lambda: self.state == DEAD, time.monotonic() + 5.0):
            self._mark_dead_locked(reason)

    def _freeze_locked(self) -> None:
        if self.frozen or self.pid is None or self._exited:
            return
        signal_group(self.pid, signal.SIGSTOP)
        # SIGSTOP takes effect when the process is next scheduled; wait for it so that
        # "frozen" means stopped (state T), not merely signalled.
        wait_stopped(self.pid)
        self.frozen = True
        self.freezes += 1
        self.last_freeze_ns = time.time_ns()

    def _thaw_locked(self) -> None:
        if not self.frozen:
            return
        if self.pid is not None and not self._exited:
            signal_group(self.pid, signal.SIGCONT)
        self.frozen = False
        self.last_thaw_ns = time.time_ns()

    def _settle_locked(self) -> None:
        """Advance the state when the runtime and every extension are waiting; freeze."""
        if self.state == DEAD or not all(ext.settled for ext in self._extensions):
            return
        if self.state == INIT and self._runtime_at_restore:
            self.state = SNAPSHOT
            self.init_done_ns = time.time_ns()
            self.idle_since = time.monotonic()
            self._snapshot_ready = self.idle_since + self._snapshot_pause_s
            # The snapshot is taken with the process stopped, reserved or not.
            self._freeze_locked()
        elif self.state in (INIT, RESTORING, POST_INVOKE) and self._runtime_waiting:
            if self.state == INIT:
                self.init_done_ns = time.time_ns()
            self.state = IDLE
            self.idle_since = time.monotonic()
        if self.state == IDLE and not self.reserved:
            self._freeze_locked()
        self._cond.notify_all()

    def _wait_locked(self, predicate: Callable[[], bool], deadline: float | None) -> bool:
        """Wait on the condition until ``predicate()`` or ``deadline`` (monotonic)."""
        while not predicate():
            if deadline is None:
                self._cond.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._cond.wait(remaining)
        return True

    def _init_outcome_locked(self, deadline: float) -> str | None:
        """Wait for INIT to complete; None if it did, else ``"error"`` or ``"timeout"``."""
        done = self._wait_locked(
            lambda: self.state in self._INIT_OVER_STATES or self.init_error is not None,
            deadline,
        )
        if not done:
            self._kill_locked("init-timeout")
            return truth.TIMEOUT
        if self.init_error is not None:
            # The runtime exits by itself after init/error; don't let it linger if not.
            self._wait_locked(
                lambda: self.state == DEAD, time.monotonic() + _INIT_ERROR_EXIT_GRACE_S
            )
            self._kill_locked(self._end_reason_hint or "init-error")
            return truth.ERROR
        if self.state == DEAD:
            return truth.ERROR
        return None

    def _restore_outcome_locked(self, init_timeout_s: float) -> str | None:
        """Hold the snapshot for its pause, answer ``restore/next``, await the runtime."""
        self._wait_locked(lambda: self.state == DEAD, self._snapshot_ready)
        if self.state == DEAD:
            return truth.ERROR
        self._thaw_locked()
        self.state = RESTORING
        self._restore_requested = True
        self._cond.notify_all()
        return self._init_outcome_locked(time.monotonic() + init_timeout_s)

    def _init_failure_locked(self, outcome: str, request_id: str) -> Served:
        now = time.time_ns()
        error: Any = self.init_error
        error_type = self.init_error_type
        if outcome == truth.TIMEOUT:
            error_type = "Sandbox.Timedout"
            error = {
                "errorMessage": f"RequestId: {request_id} Error: INIT timed out",
                "errorType": error_type,
            }
        elif error is None:
            error_type = "Runtime.ExitError"
            error = {
                "errorMessage": f"RequestId: {request_id} Error: Runtime exited during INIT"
                + (
                    f" with exit status {self.exit_status}"
                    if self.exit_status is not None
                    else f" ({self.end_reason})"
                ),
                "errorType": error_type,
            }
        return Served(
            cold=True,
            outcome=outcome,
            delivered_ns=0,
            end_ns=now,
            error=error,
            error_type=error_type,
        )

    # -- driven by the local Lambda ------------------------------------------------------

    @property
    def reserved(self) -> bool:
        """True while a request has claimed the environment."""
        return self.claimed_by is not None

    @property
    def claimable(self) -> bool:
        """True when a request may try to claim it (settled and unclaimed)."""
        return self.state in (IDLE, SNAPSHOT) and not self.reserved

    def try_claim(self, request_id: str) -> bool:
        """Claim a settled, unclaimed environment for a request; True if claimed."""
        with self._cond:
            if self.reserved or self.state not in (IDLE, SNAPSHOT):
                return False
            self.claimed_by = request_id
            return True

    def _release_locked(self, request_id: str) -> None:
        if self.claimed_by == request_id:
            self.claimed_by = None
            if self.state != DEAD:
                self._settle_locked()

    def begin_reap(self, idle_timeout_s: float, now: float) -> bool:
        """Mark an unclaimed environment idle for ``idle_timeout_s`` as shutting down."""
        with self._cond:
            if (
                self.reserved
                or self.state not in (IDLE, SNAPSHOT)
                or self.init_type == PROVISIONED_CONCURRENCY
                or now - self.idle_since < idle_timeout_s
            ):
                return False
            self.state = SHUTDOWN
            return True

    def wait_settled(self, timeout_s: float) -> bool:
        """Wait until the environment is frozen waiting for work (or claimed, or dead)."""
        with self._cond:
            return self._wait_locked(
                lambda: (
                    self.state in (DEAD, SHUTDOWN)
                    or (self.state in (IDLE, SNAPSHOT) and (self.frozen or self.reserved))
                ),
                time.monotonic() + timeout_s,
            )

    def await_init(self, init_timeout_s: float) -> None:
        """Wait for INIT to finish (or fail, or time out: then the environment is dead)."""
        with self._cond:
            self._init_outcome_locked(self._init_deadline(init_timeout_s))

    def _init_deadline(self, init_timeout_s: float) -> float:
        """The monotonic deadline for INIT: ``init_timeout_s`` after the process started."""
        elapsed_s = max(0.0, (time.time_ns() - self.spawn_start_ns) / 1e9)
        return time.monotonic() - elapsed_s + init_timeout_s

    def invoke(
        self, invocation: Invocation, *, init_timeout_s: float, wait_for_freeze: bool
    ) -> Served:
        """Serve one invocation in this (reserved) environment.

        Waits for INIT (and, under snap-start, the snapshot pause and restore), thaws,
        delivers the event to the runtime and to extensions, and waits for the response
        or error until the function timeout (then kills the environment). With
        ``wait_for_freeze``, also waits until the environment has settled again (frozen),
        so that sequential invocations find it idle.
        """
        with self._cond:
            try:
                return self._invoke_locked(invocation, init_timeout_s, wait_for_freeze)
            finally:
                # Normally released when the response arrives; this covers failures.
                self._release_locked(invocation.request_id)

    def _invoke_locked(
        self, invocation: Invocation, init_timeout_s: float, wait_for_freeze: bool
    ) -> Served:
        failure = self._init_outcome_locked(self._init_deadline(init_timeout_s))
        if failure is None and self.state == SNAPSHOT:
            failure = self._restore_outcome_locked(init_timeout_s)
        if failure is not None:
            return self._init_failure_locked(failure, invocation.request_id)

        cold = self.invocations == 0
        init_duration_ms = None
        if cold and self.init_done_ns is not None:
            init_duration_ms = (self.init_done_ns - self.spawn_start_ns) / 1e6
        timeout_s = self.function.timeout_s
        self._thaw_locked()
        invocation.delivered_ns = time.time_ns()
        invocation.deadline_ms = invocation.delivered_ns // 1_000_000 + int(timeout_s * 1000)
        deadline = time.monotonic() + timeout_s
        self.state = INVOKING
        self._current = invocation
        self._pending = invocation
        self.invocations += 1
        # Counted now: once the response is in, another request may claim and invoke the
        # environment before this thread runs again.
        delivered_as = self.invocations
        self.request_ids.append(invocation.request_id)
        for ext in self._extensions:
            if "INVOKE" in ext.events:
                ext.queue.append(
                    {
                        "eventType": "INVOKE",
                        "deadlineMs": invocation.deadline_ms,
                        "requestId": invocation.request_id,
                        "invokedFunctionArn": self.function.function_arn,
                        "tracing": {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id},
                    }
                )
        self._log(f"START RequestId: {invocation.request_id} Version: {FUNCTION_VERSION}")
        self._cond.notify_all()

        answered = self._wait_locked(lambda: invocation.done or self.state == DEAD, deadline)
        if invocation.done:
            outcome = truth.OK if invocation.error is None else truth.ERROR
            served = Served(
                cold=cold,
                outcome=outcome,
                delivered_ns=invocation.delivered_ns,
                end_ns=invocation.end_ns,
                response=parse_payload(invocation.response),
                error=parse_payload(invocation.error),
                error_type=invocation.error_type,
                init_duration_ms=init_duration_ms,
            )
        else:
            # No response: the environment died under the invocation, or it timed out.
            if answered:
                outcome, error_type = truth.ERROR, "Runtime.ExitError"
                message = f"Runtime exited ({self.end_reason})"
            else:
                self._log(f"{invocation.request_id} Task timed out after {timeout_s:.2f} seconds")
                self._shutdown_locked("timeout", "timeout")
                outcome, error_type = truth.TIMEOUT, "Sandbox.Timedout"
                message = f"Task timed out after {timeout_s:.2f} seconds"
            served = Served(
                cold=cold,
                outcome=outcome,
                delivered_ns=invocation.delivered_ns,
                end_ns=time.time_ns(),
                error_type=error_type,
                init_duration_ms=init_duration_ms,
                error={
                    "errorMessage": f"RequestId: {invocation.request_id} Error: {message}",
                    "errorType": error_type,
                },
            )
        self._current = None
        self._pending = None
        self._log_report(invocation.request_id, served)

        if wait_for_freeze and self.state != DEAD:
            settled = self._wait_locked(
                lambda: (
                    self.state in (DEAD, SHUTDOWN)
                    or self.invocations != delivered_as
                    or (self.state == IDLE and (self.frozen or self.reserved))
                ),
                # A response just before the deadline still leaves the runtime a moment
                # to ask for its next event; the slack keeps that from being a timeout.
                max(deadline, time.monotonic() + _SETTLE_SLACK_S),
            )
            if not settled:
                # Extensions' work after the response counts against the timeout: an
                # environment still busy at the deadline is reset, as on Lambda.
                waiting = sum(ext.settled for ext in self._extensions)
                self._log(
                    f"{invocation.request_id} Environment did not settle after its response "
                    f"(state {self.state}, runtime waiting: {self._runtime_waiting}, "
                    f"extensions waiting: {waiting}/{len(self._extensions)}, "
                    f"{(time.time_ns() - invocation.end_ns) / 1e6:.0f} ms after the response)"
                )
                self._shutdown_locked("timeout", "timeout")
        return served

    def shutdown(self, shutdown_reason: str = "spindown", end_reason: str = "reaped") -> None:
        """End the environment as Lambda does: SHUTDOWN to extensions, then SIGKILL.

        With extensions registered, those subscribed get a ``SHUTDOWN`` event
        (``shutdownReason``: ``spindown``, ``timeout`` or ``failure``), the runtime gets
        SIGTERM, and the process has the shutdown grace period to exit; without
        extensions, it is killed at once. ``end_reason`` is recorded as the environment's.
        """
        with self._cond:
            self._shutdown_locked(shutdown_reason, end_reason)

    def _shutdown_locked(self, shutdown_reason: str, end_reason: str) -> None:
        if self.state == DEAD:
            return
        self.state = SHUTDOWN
        self._end_reason_hint = end_reason
        grace_s = self._shutdown_grace_s
        if self._extensions and grace_s > 0 and self.pid is not None and not self._exited:
            self._thaw_locked()
            deadline_ms = time.time_ns() // 1_000_000 + int(grace_s * 1000)
            for ext in self._extensions:
                if "SHUTDOWN" in ext.events:
                    ext.queue.append(
                        {
                            "eventType": "SHUTDOWN",
                            "shutdownReason": shutdown_reason,
                            "deadlineMs": deadline_ms,
                        }
                    )
            self._cond.notify_all()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            self._wait_locked(lambda: self.state == DEAD, time.monotonic() + grace_s)
        self._kill_locked(end_reason)

    def kill(self, reason: str = "killed") -> None:
        """SIGKILL the environment's process group now (works on frozen ones too)."""
        with self._cond:
            self._kill_locked(reason)

    def info(self) -> truth.EnvironmentInfo:
        """An immutable snapshot of this environment."""
        with self._cond:
            return truth.EnvironmentInfo(
                id=self.id,
                init_type=self.init_type,
                pid=self.pid,
                port=self._server.server_port,
                log_stream=self.log_stream,
                log_path=str(self.log_path),
                state=self.state,
                frozen=self.frozen,
                spawn_start_ns=self.spawn_start_ns,
                spawn_end_ns=self.spawn_end_ns,
                first_next_ns=self.first_next_ns,
                init_done_ns=self.init_done_ns,
                restore_done_ns=self.restore_done_ns,
                restored_next_ns=self.restored_next_ns,
                last_freeze_ns=self.last_freeze_ns,
                last_thaw_ns=self.last_thaw_ns,
                freezes=self.freezes,
                invocations=self.invocations,
                request_ids=tuple(self.request_ids),
                extensions=tuple(ext.name for ext in self._extensions),
                init_error=self.init_error,
                end_reason=self.end_reason,
                exit_status=self.exit_status,
                ended_ns=self.ended_ns,
            )

    def logs(self) -> str:
        """Everything the process wrote to stdout and stderr, plus START/END/REPORT lines."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _log(self, line: str) -> None:
        # Appending (O_APPEND) interleaves whole lines with the runtime's own output.
        # Best effort: a request finishing while its local Lambda closes finds the
        # temporary log directory gone.
        with contextlib.suppress(OSError), open(self.log_path, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def _log_report(self, request_id: str, served: Served) -> None:
        duration_ms = (served.end_ns - served.delivered_ns) / 1e6
        report = (
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, int(duration_ms + 0.999999))} ms\t"
            f"Memory Size: {self.function.memory_mb} MB\t"
            f"Max Memory Used: {self._max_memory_mb()} MB"
        )
        if served.init_duration_ms is not None:
            report += f"\tInit Duration: {served.init_duration_ms:.2f} ms"
        self._log(f"END RequestId: {request_id}")
        self._log(report)

    def _max_memory_mb(self) -> int:
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) // 1024
        except (OSError, ValueError):
            pass
        return 0

    # -- the Runtime API and Extensions API (RuntimeApiBackend) ---------------------------

    def _gone(self) -> Reply:
        return Reply.error(410, "Environment.Gone", f"environment {self.id} has ended")

    def runtime_next(self, peer: Peer | None = None) -> Reply:
        """``invocation/next``: settle (maybe freeze), then wait for the next event."""
        with self._cond:
            if self.state == DEAD:
                return self._gone()
            now = time.time_ns()
            if self.first_next_ns is None:
                self.first_next_ns = now
            if self.state == RESTORING and self.restored_next_ns is None:
                self.restored_next_ns = now
            self._runtime_waiting = True
            self._settle_locked()
            self._wait_locked(lambda: self.state == DEAD or self._pending is not None, None)
            self._runtime_waiting = False
            invocation = self._pending
            if invocation is None:
                return self._gone()
            self._pending = None
            return self._event_reply(invocation)

    def _event_reply(self, invocation: Invocation) -> Reply:
        """The answer to ``invocation/next`` that hands ``invocation`` to the runtime."""
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.function.function_arn,
            "Lambda-Runtime-Trace-Id": invocation.trace_id,
        }
        if invocation.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = invocation.client_context
        if invocation.cognito_identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = invocation.cognito_identity
        return Reply(200, invocation.body, headers)

    def _finish_locked(self, request_id: str) -> Invocation | None:
        invocation = self._current
        if invocation is None or invocation.request_id != request_id or invocation.done:
            return None
        invocation.done = True
        invocation.end_ns = time.time_ns()
        self.state = POST_INVOKE
        # The environment may be claimed again as soon as it settles.
        self.claimed_by = None
        self._current = None
        self._cond.notify_all()
        return invocation

    def runtime_response(self, request_id: str, body: bytes) -> Reply:
        """``invocation/{id}/response``."""
        with self._cond:
            current = self._current
            if current is not None and current.request_id == request_id:
                current.response = body
            if self._finish_locked(request_id) is None:
                return Reply.error(400, "InvalidRequestID", f"no invocation {request_id}")
            return ACCEPTED

    def runtime_error(self, request_id: str, error_type: str | None, body: bytes) -> Reply:
        """``invocation/{id}/error``."""
        with self._cond:
            current = self._current
            if current is not None and current.request_id == request_id:
                current.error = body or b"{}"
                parsed = parse_payload(current.error)
                current.error_type = error_type or (
                    parsed.get("errorType") if isinstance(parsed, dict) else None
                )
            if self._finish_locked(request_id) is None:
                return Reply.error(400, "InvalidRequestID", f"no invocation {request_id}")
            return ACCEPTED

    def _record_init_error_locked(self, error_type: str | None, body: bytes, hint: str) -> None:
        parsed = parse_payload(body) if body else {}
        self.init_error = parsed
        self.init_error_type = error_type or (
            parsed.get("errorType") if isinstance(parsed, dict) else None
        )
        self._end_reason_hint = hint
        self._cond.notify_all()

    def runtime_init_error(self, error_type: str | None, body: bytes) -> Reply:
        """``init/error``: INIT failed; the runtime exits next."""
        with self._cond:
            if self.state not in (INIT, RESTORING):
                return Reply.error(403, "InvalidStateTransition", f"not in INIT ({self.state})")
            self._record_init_error_locked(error_type, body, "init-error")
            return ACCEPTED

    def runtime_restore_next(self) -> Reply:
        """``restore/next``: INIT done under snap-start; answered when restored."""
        with self._cond:
            if self.init_type != SNAP_START:
                return Reply.error(
                    403,
                    "InvalidStateTransition",
                    "restore/next is only for snap-start environments",
                )
            if self.state == DEAD:
                return self._gone()
            if self.first_next_ns is None:
                self.first_next_ns = time.time_ns()
            self._runtime_at_restore = True
            self._settle_locked()
            self._wait_locked(lambda: self.state == DEAD or self._restore_requested, None)
            self._runtime_at_restore = False
            if self.state == DEAD:
                return self._gone()
            self.restore_done_ns = time.time_ns()
            return Reply(200, b"")

    def runtime_restore_error(self, error_type: str | None, body: bytes) -> Reply:
        """``restore/error``: an after-restore hook failed; the runtime exits next."""
        with self._cond:
            self._record_init_error_locked(error_type, body, "restore-error")
            return ACCEPTED

    def extension_register(self, name: str | None, body: bytes) -> Reply:
        """``extension/register``: only during INIT, as on Lambda."""
        if not name:
            return Reply.error(400, "InvalidRequest", "Lambda-Extension-Name header missing")
        try:
            request = json.loads(body) if body else {}
            events = frozenset(request.get("events", []))
        except (ValueError, AttributeError, TypeError):
            return Reply.error(400, "InvalidRequest", 'body must be {"events": [...]}')
        unknown = events - ALLOWED_EXTENSION_EVENTS
        if unknown:
            return Reply.error(400, "InvalidEventType", f"unknown events: {sorted(unknown)}")
        with self._cond:
            if self.state != INIT:
                return Reply.error(
                    403,
                    "Extension.RegistrationClosed",
                    f"extensions register during INIT (state: {self.state})",
                )
            extension = _Extension(id=str(uuid.uuid4()), name=name, events=events)
            self._extensions.append(extension)
        return Reply.json(
            200,
            {
                "functionName": self.function.function_name,
                "functionVersion": FUNCTION_VERSION,
                "handler": self.function.handler,
            },
            {"Lambda-Extension-Identifier": extension.id},
        )

    def _extension(self, extension_id: str | None) -> _Extension | None:
        return next((ext for ext in self._extensions if ext.id == extension_id), None)

    def extension_next(self, extension_id: str | None) -> Reply:
        """``extension/event/next``: settle (maybe freeze), then wait for an event."""
        with self._cond:
            extension = self._extension(extension_id)
            if extension is None:
                return Reply.error(
                    403,
                    "Extension.UnknownExtensionIdentifier",
                    f"unknown extension id {extension_id!r}",
                )
            extension.parked = True
            self._settle_locked()
            self._wait_locked(lambda: self.state == DEAD or bool(extension.queue), None)
            extension.parked = False
            if not extension.queue:
                return self._gone()
            event = extension.queue.popleft()
            return Reply.json(200, event, {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())})

    def extension_error(
        self, extension_id: str | None, phase: str, error_type: str | None, body: bytes
    ) -> Reply:
        """``extension/init/error`` fails INIT; ``extension/exit/error`` is only recorded."""
        with self._cond:
            extension = self._extension(extension_id)
            if extension is None:
                return Reply.error(
                    403,
                    "Extension.UnknownExtensionIdentifier",
                    f"unknown extension id {extension_id!r}",
                )
            if phase == "init" and self.state == INIT:
                self._record_init_error_locked(error_type, body, "init-error")
            else:
                self._log(f"EXTENSION {extension.name} {phase}/error {error_type or ''}".rstrip())
            return ACCEPTED


# -- Lambda Managed Instances -------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """``pid``'s child processes and theirs (from /proc), nearest first."""
    found: list[int] = []
    parents = [pid]
    while parents:
        parent = parents.pop(0)
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", encoding="ascii") as children:
                    kids = [int(kid) for kid in children.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            parents += kids
    return found


def _client_socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the IPv4 TCP socket from 127.0.0.1:``local_port`` to ``remote_port``."""
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        fields = row.split()
        try:
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            inode = int(fields[9])
        except (IndexError, ValueError):
            continue
        if local == local_port and remote == remote_port and inode:
            return inode
    return None


def _socket_owner(inode: int, candidates: list[int]) -> int | None:
    """The first of ``candidates`` holding socket ``inode`` open, if any."""
    target = f"socket:[{inode}]"
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
    return None


@dataclass
class _Worker:
    """One worker process of a Managed Instances environment, as its requests show it."""

    pid: int | None
    asks: int = 0  # how many times it asked for work (invocation/next)
    served: int = 0  # how many invocations it took
    current: str | None = None  # the request it took last, until it asks again
    first_next_ns: int | None = None


@dataclass
class _Waiter:
    """A worker parked in ``invocation/next``, and the invocation it is handed."""

    worker: _Worker
    invocation: Invocation | None = None


class ManagedInstancesEnvironment(ExecutionEnvironment):
    """An execution environment of Lambda Managed Instances (multi-concurrency).

    The runtime process runs with ``AWS_LAMBDA_MAX_CONCURRENCY=N`` and
    ``AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances``: ``awslambdaric`` forks
    N worker processes before any INIT; each imports the handler itself (its own INIT)
    and asks the same Runtime API for work, concurrently. As on Lambda:

    * INIT is complete when every registered extension and at least one worker have
      asked for their next event; INIT failures come from the workers: the first
      ``init/error`` is recorded, later ones are refused with 403 (the client takes that
      as "another worker already posted it");
    * up to N requests are in flight at once (:attr:`claimable` while fewer are, INIT
      included: they wait for it); each event goes to one waiting worker, the one
      waiting longest first; responses and errors are accepted per request id from any
      worker;
    * the environment is never frozen (no SIGSTOP) and never reset after a response;
    * a timed-out invocation fails for its caller but is not enforced: the environment
      and its other invocations go on, and the worker, still busy, counts against the
      capacity until it asks for work again (its late response is refused);
    * extensions may register for ``SHUTDOWN`` only (``INVOKE`` is refused with 403
      ``Extension.InvalidEventType``), and a name only once.

    The worker behind each ``invocation/next`` is found from the connection (the client
    socket's owner in /proc), not from anything the runtime says, and recorded per
    request with whether it was that worker's first: ``cold`` when the request waited
    for that worker's INIT, ``proactive`` when the worker was ready before the request
    came (see :class:`~lifecycle_probe.emulator.truth.InvocationResult`).
    """

    # A worker may be serving already when INIT is over (INVOKING): it needs no settling.
    _INIT_OVER_STATES = (IDLE, INVOKING, DEAD)

    def __init__(
        self,
        env_id: str,
        function: FunctionConfig,
        init_type: str,
        *,
        max_concurrency: int,
        log_dir: Path,
        spawner: Spawner,
        snapshot_pause_s: float,
        shutdown_grace_s: float = 0.5,
        claimed_by: str | None = None,
    ) -> None:
        super().__init__(
            env_id,
            function,
            init_type,
            log_dir=log_dir,
            spawner=spawner,
            snapshot_pause_s=snapshot_pause_s,
            shutdown_grace_s=shutdown_grace_s,
        )
        self.max_concurrency = max_concurrency
        self._claims: set[str] = set() if claimed_by is None else {claimed_by}
        self._abandoned: set[str] = set()  # timed out, their worker still busy
        self._in_flight: dict[str, Invocation] = {}
        self._queue: deque[Invocation] = deque()  # handed over, no worker waiting yet
        self._waiting: deque[_Waiter] = deque()
        self._workers: dict[int | Peer, _Worker] = {}
        self._taken_by: dict[str, _Worker] = {}  # request id -> the worker that took it

    def environment_variables(self) -> dict[str, str]:
        """Those of any environment, plus ``AWS_LAMBDA_MAX_CONCURRENCY`` and the
        Managed Instances ``AWS_LAMBDA_INITIALIZATION_TYPE``."""
        variables = super().environment_variables()
        variables["AWS_LAMBDA_MAX_CONCURRENCY"] = str(self.max_concurrency)
        variables["AWS_LAMBDA_INITIALIZATION_TYPE"] = MANAGED_INSTANCES_INITIALIZATION_TYPE
        return variables

    # -- capacity --------------------------------------------------------------------------

    @property
    def reserved(self) -> bool:
        """True while all N slots are taken (requests in flight or timed-out workers)."""
        return len(self._claims) + len(self._abandoned) >= self.max_concurrency

    @property
    def claimable(self) -> bool:
        """True while it has a free slot and is initialising or serving."""
        return self.state in (INIT, IDLE, INVOKING) and not self.reserved

    def try_claim(self, request_id: str) -> bool:
        """Take one of the N slots for a request; True if taken."""
        with self._cond:
            if not self.claimable:
                return False
            self._claims.add(request_id)
            return True

    def begin_reap(self, idle_timeout_s: float, now: float) -> bool:
        """Mark it shutting down when nothing has been in flight for ``idle_timeout_s``."""
        with self._cond:
            if (
                self._claims
                or self._abandoned
                or self.state != IDLE
                or now - self.idle_since < idle_timeout_s
            ):
                return False
            self.state = SHUTDOWN
            return True

    def wait_settled(self, timeout_s: float) -> bool:
        """Wait until every worker is waiting for work with nothing in flight (or until
        a request has claimed it, or it is dead). It is never frozen."""
        with self._cond:
            return self._wait_locked(
                lambda: (
                    self.state in (DEAD, SHUTDOWN)
                    or bool(self._claims)
                    or (self.state == IDLE and len(self._waiting) >= self.max_concurrency)
                ),
                time.monotonic() + timeout_s,
            )

    def _settle_locked(self) -> None:
        """INIT ends at the first worker's request once extensions wait; never freeze."""
        if self.state == DEAD or not all(ext.settled for ext in self._extensions):
            return
        if self.state == INIT and self.first_next_ns is not None:
            self.init_done_ns = time.time_ns()
            self.state = IDLE
            self.idle_since = time.monotonic()
        self._update_state_locked()

    def _update_state_locked(self) -> None:
        if self.state in (IDLE, INVOKING):
            busy = bool(self._in_flight)
            if self.state == INVOKING and not busy:
                self.idle_since = time.monotonic()
            self.state = INVOKING if busy else IDLE
        self._cond.notify_all()

    def _release_locked(self, request_id: str) -> None:
        self._claims.discard(request_id)
        self._update_state_locked()

    # -- requests --------------------------------------------------------------------------

    def _invoke_locked(
        self, invocation: Invocation, init_timeout_s: float, wait_for_freeze: bool
    ) -> Served:
        invocation.arrived_ns = time.time_ns()
        # A request may claim it before its process is spawned: INIT's deadline counts
        # from the spawn.
        self._wait_locked(
            lambda: self.spawn_start_ns != 0 or self.state == DEAD,
            time.monotonic() + init_timeout_s,
        )
        failure = self._init_outcome_locked(self._init_deadline(init_timeout_s))
        if failure is not None:
            return self._init_failure_locked(failure, invocation.request_id)

        timeout_s = self.function.timeout_s
        handed_ns = time.time_ns()
        invocation.deadline_ms = handed_ns // 1_000_000 + int(timeout_s * 1000)
        deadline = time.monotonic() + timeout_s
        self._in_flight[invocation.request_id] = invocation
        self.invocations += 1
        self.request_ids.append(invocation.request_id)
        self._update_state_locked()
        self._log(f"START RequestId: {invocation.request_id} Version: {FUNCTION_VERSION}")
        if self._waiting:
            self._waiting.popleft().invocation = invocation
        else:
            self._queue.append(invocation)
        self._cond.notify_all()

        answered = self._wait_locked(lambda: invocation.done or self.state == DEAD, deadline)
        timed_out = False
        self._in_flight.pop(invocation.request_id, None)
        self._update_state_locked()
        init_duration_ms = None
        start_type = None
        worker = self._taken_by.pop(invocation.request_id, None)
        ready_ns = invocation.worker_ready_ns
        if invocation.worker_first and ready_ns is not None:
            init_duration_ms = (ready_ns - self.spawn_start_ns) / 1e6
            # Its caller waited for this worker's INIT (cold), or the worker had been
            # initialised before the request came, ahead of demand (proactive).
            start_type = (
                truth.START_TYPE_OF_FIRST_INVOKE[self.init_type]
                if ready_ns > invocation.arrived_ns
                else truth.PROACTIVE_START
            )
        if invocation.done:
            served = Served(
                cold=invocation.worker_first,
                outcome=truth.OK if invocation.error is None else truth.ERROR,
                delivered_ns=invocation.delivered_ns,
                end_ns=invocation.end_ns,
                response=parse_payload(invocation.response),
                error=parse_payload(invocation.error),
                error_type=invocation.error_type,
                init_duration_ms=init_duration_ms,
                worker_pid=invocation.worker_pid,
                start_type=start_type,
            )
        else:
            if answered:
                outcome, error_type = truth.ERROR, "Runtime.ExitError"
                message = f"Runtime exited ({self.end_reason})"
            else:
                # Not enforced: the worker goes on, and stays busy until it asks again.
                self._log(f"{invocation.request_id} Task timed out after {timeout_s:.2f} seconds")
                outcome, error_type = truth.TIMEOUT, "Sandbox.Timedout"
                message = f"Task timed out after {timeout_s:.2f} seconds"
                invocation.done = timed_out = True  # a late response is refused
                if invocation in self._queue:
                    self._queue.remove(invocation)
                elif invocation.delivered_ns:
                    self._abandoned.add(invocation.request_id)
            served = Served(
                cold=invocation.worker_first,
                outcome=outcome,
                delivered_ns=invocation.delivered_ns,
                end_ns=time.time_ns(),
                error_type=error_type,
                init_duration_ms=init_duration_ms,
                error={
                    "errorMessage": f"RequestId: {invocation.request_id} Error: {message}",
                    "errorType": error_type,
                },
                worker_pid=invocation.worker_pid,
                start_type=start_type,
            )
        self._log_report(invocation.request_id, served)
        if wait_for_freeze and not timed_out and worker is not None and self.state != DEAD:
            # Back-to-back requests find the worker waiting again (deterministic reuse).
            asked = invocation.worker_asks
            if not self._wait_locked(
                lambda: self.state in (DEAD, SHUTDOWN) or worker.asks > asked,
                max(deadline, time.monotonic() + _SETTLE_SLACK_S),
            ):
                self._log(
                    f"{invocation.request_id} Worker {worker.pid} did not ask for work again "
                    "before the deadline"
                )
        return served

    def _worker_locked(self, pid: int | None, peer: Peer | None) -> _Worker:
        key: int | Peer = pid if pid is not None else (peer or ("?", 0))
        worker = self._workers.get(key)
        if worker is None:
            worker = self._workers[key] = _Worker(pid)
        return worker

    def _caller_pid(self, peer: Peer | None) -> int | None:
        """The worker process that made this Runtime API connection, from /proc."""
        with self._cond:
            root = self.pid
        if root is None or peer is None:
            return None
        inode = _client_socket_inode(peer[1], self._server.server_port)
        if inode is None:
            return None
        known = [pid for pid in self._workers if isinstance(pid, int)]
        owner = _socket_owner(inode, known)
        if owner is None:
            owner = _socket_owner(inode, [*_descendants(root), root])
        return owner

    def _handed_or_dead(self, waiter: _Waiter) -> bool:
        return self.state == DEAD or waiter.invocation is not None

    def runtime_next(self, peer: Peer | None = None) -> Reply:
        """``invocation/next`` from one worker: wait for an event of its own."""
        pid = self._caller_pid(peer)
        with self._cond:
            if self.state == DEAD:
                return self._gone()
            worker = self._worker_locked(pid, peer)
            now = time.time_ns()
            if self.first_next_ns is None:
                self.first_next_ns = now
            if worker.first_next_ns is None:
                worker.first_next_ns = now
            worker.asks += 1
            if worker.current is not None:
                self._abandoned.discard(worker.current)
                worker.current = None
            invocation: Invocation | None = None
            # An invocation that timed out before a worker took it is skipped.
            while invocation is None or invocation.done:
                if self._queue:
                    invocation = self._queue.popleft()
                    self._settle_locked()
                    continue
                waiter = _Waiter(worker)
                self._waiting.append(waiter)
                self._settle_locked()
                self._wait_locked(partial(self._handed_or_dead, waiter), None)
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
                invocation = waiter.invocation
                if invocation is None:
                    return self._gone()
            invocation.worker_pid = worker.pid
            invocation.worker_first = worker.served == 0
            invocation.worker_asks = worker.asks
            invocation.worker_ready_ns = worker.first_next_ns
            invocation.delivered_ns = time.time_ns()
            worker.served += 1
            worker.current = invocation.request_id
            self._taken_by[invocation.request_id] = worker
            self._cond.notify_all()
            return self._event_reply(invocation)

    def _finish_mi_locked(self, request_id: str) -> Invocation | None:
        invocation = self._in_flight.get(request_id)
        if invocation is None or invocation.done:
            if request_id in self._abandoned:
                self._log(f"{request_id} response after the timeout refused")
            return None
        return invocation

    def runtime_response(self, request_id: str, body: bytes) -> Reply:
        """``invocation/{id}/response`` from any worker."""
        with self._cond:
            invocation = self._finish_mi_locked(request_id)
            if invocation is None:
                return Reply.error(400, "InvalidRequestID", f"no invocation {request_id}")
            invocation.response = body
            invocation.done = True
            invocation.end_ns = time.time_ns()
            self._cond.notify_all()
            return ACCEPTED

    def runtime_error(self, request_id: str, error_type: str | None, body: bytes) -> Reply:
        """``invocation/{id}/error`` from any worker."""
        with self._cond:
            invocation = self._finish_mi_locked(request_id)
            if invocation is None:
                return Reply.error(400, "InvalidRequestID", f"no invocation {request_id}")
            invocation.error = body or b"{}"
            parsed = parse_payload(invocation.error)
            invocation.error_type = error_type or (
                parsed.get("errorType") if isinstance(parsed, dict) else None
            )
            invocation.done = True
            invocation.end_ns = time.time_ns()
            self._cond.notify_all()
            return ACCEPTED

    def runtime_init_error(self, error_type: str | None, body: bytes) -> Reply:
        """``init/error``: the first worker's is recorded; any later one gets 403."""
        with self._cond:
            if self.init_error is not None:
                self._log(f"INIT error of another worker refused ({error_type or 'unknown'})")
                return Reply.error(
                    403, "InvalidStateTransition", "INIT error already reported by a worker"
                )
            return super().runtime_init_error(error_type, body)

    def extension_register(self, name: str | None, body: bytes) -> Reply:
        """Only ``SHUTDOWN`` may be subscribed to, and a name registered once."""
        try:
            request = json.loads(body) if body else {}
            events = set(request.get("events", []))
        except (ValueError, AttributeError, TypeError):
            events = set()
        if events - {"SHUTDOWN"}:
            return Reply.error(
                403,
                "Extension.InvalidEventType",
                f"{sorted(events - {'SHUTDOWN'})}: only SHUTDOWN can be registered for "
                "under Lambda Managed Instances",
            )
        with self._cond:
            if any(ext.name == name for ext in self._extensions):
                return Reply.error(
                    403,
                    "Extension.InvalidExtensionState",
                    "Extension with this name already registered",
                )
        return super().extension_register(name, body)

    def info(self) -> truth.EnvironmentInfo:
        """A snapshot, with the worker pids and the concurrency."""
        info = super().info()
        with self._cond:
            workers = tuple(pid for pid in self._workers if isinstance(pid, int))
        return dataclasses.replace(info, max_concurrency=self.max_concurrency, workers=workers)
