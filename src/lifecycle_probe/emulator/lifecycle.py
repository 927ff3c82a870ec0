"""The lifecycle of one execution environment: its process, states, freeze and thaw.

States (``EnvironmentLifecycle.state``)::

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
threads drive the environment through ``invoke`` (:mod:`.delivery`), :meth:`shutdown`
and :meth:`kill`. This module holds the states and their transitions; delivering an
invocation, the Extensions API and the log lines each have a module of their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle_probe.emulator import platform_events, truth
from lifecycle_probe.emulator.function import (
    INITIALIZATION_TYPE_VARIABLE,
    PROVISIONED_CONCURRENCY,
    FunctionConfig,
)
from lifecycle_probe.emulator.invocation import Invocation, parse_payload
from lifecycle_probe.emulator.launch import log_stream_name, runtime_command, runtime_variables
from lifecycle_probe.emulator.process import (
    Spawner,
    signal_group,
    wait_exited,
    wait_stopped,
)
from lifecycle_probe.emulator.reports import EnvironmentLog
from lifecycle_probe.emulator.runtime_api import Reply, RuntimeApiBackend, RuntimeApiServer
from lifecycle_probe.emulator.telemetry_api import TelemetryDispatcher

__all__ = [
    "DEAD",
    "IDLE",
    "INIT",
    "INVOKING",
    "POST_INVOKE",
    "RESTORING",
    "SHUTDOWN",
    "SNAPSHOT",
    "EnvironmentLifecycle",
    "Extension",
]

INIT = "init"
SNAPSHOT = "snapshot"
RESTORING = "restoring"
IDLE = "idle"
INVOKING = "invoking"
POST_INVOKE = "post-invoke"
SHUTDOWN = "shutdown"
DEAD = "dead"

# How long a runtime that reported an INIT error gets to exit by itself.
_INIT_ERROR_EXIT_GRACE_S = 1.0


@dataclass
class Extension:
    """A registered extension, as the freeze decision sees it: parked, with events due."""

    id: str
    name: str
    events: frozenset[str]
    parked: bool = False  # waiting in event/next
    queue: deque[dict[str, Any]] = field(default_factory=deque)

    @property
    def settled(self) -> bool:
        return self.parked and not self.queue


class EnvironmentLifecycle:
    """A runtime process (``python -m awslambdaric HANDLER``), its states and endpoint.

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
        self._log_file = EnvironmentLog(self.log_path)
        # Its own /tmp, as on Lambda (TMPDIR, which tempfile and the probe honour); removed
        # when the process has exited.
        self.tmp_dir = log_dir / f"{env_id}.tmp"
        self._spawner = spawner
        self._snapshot_pause_s = snapshot_pause_s
        self._shutdown_grace_s = shutdown_grace_s
        self._cond = threading.Condition()
        self._server = RuntimeApiServer(self._backend())
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
        self.restore_start_ns: int | None = None
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

        self._extensions: list[Extension] = []
        self._runtime_waiting = False  # the runtime is parked in invocation/next
        self._runtime_at_restore = False  # the runtime is parked in restore/next
        self._restore_requested = False
        self._snapshot_ready = 0.0  # time.monotonic() when the snapshot pause ends
        self._pending: Invocation | None = None  # delivered, not yet taken by the runtime
        self._current: Invocation | None = None  # delivered, no response yet
        self._end_reason_hint: str | None = None
        self._telemetry = TelemetryDispatcher(env_id, self._log)
        self._init_reported = False  # platform.initRuntimeDone and initReport are out

    def _backend(self) -> RuntimeApiBackend:
        """What answers the endpoint: the whole environment, which this part is not."""
        raise NotImplementedError

    @property
    def initialization_type(self) -> str:
        """The ``AWS_LAMBDA_INITIALIZATION_TYPE`` value, as platform events name it too."""
        return INITIALIZATION_TYPE_VARIABLE[self.init_type]

    # -- process -----------------------------------------------------------------------

    @property
    def runtime_api(self) -> str:
        """``127.0.0.1:PORT``: this environment's ``AWS_LAMBDA_RUNTIME_API``."""
        return self._server.address

    def command(self) -> list[str]:
        """The runtime command, behind ``AWS_LAMBDA_EXEC_WRAPPER`` when one is set."""
        return runtime_command(self.function)

    def environment_variables(self) -> dict[str, str]:
        """The process environment: the emulator's own, then the function's, then Lambda's."""
        return runtime_variables(
            self.function,
            init_type=self.init_type,
            log_stream=self.log_stream,
            runtime_api=self.runtime_api,
            tmp_dir=self.tmp_dir,
        )

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
            self._telemetry.publish(
                platform_events.INIT_START,
                platform_events.init_start(self.function, self.initialization_type),
                self.spawn_start_ns,
            )
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
        self._telemetry.close()
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
        # A telemetry batch in flight finishes first; nothing more is sent until the thaw.
        self._telemetry.pause()
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
        self._telemetry.resume()

    def _settle_locked(self) -> None:
        """Advance the state when the runtime and every extension are waiting; freeze."""
        if self.state == DEAD or not all(ext.settled for ext in self._extensions):
            return
        if self.state == INIT and self._runtime_at_restore:
            self.state = SNAPSHOT
            self._init_done_locked()
            self.idle_since = time.monotonic()
            self._snapshot_ready = self.idle_since + self._snapshot_pause_s
            # The snapshot is taken with the process stopped, reserved or not.
            self._freeze_locked()
        elif self.state in (INIT, RESTORING, POST_INVOKE) and self._runtime_waiting:
            if self.state == INIT:
                self._init_done_locked()
            self.state = IDLE
            self.idle_since = time.monotonic()
        if self.state == IDLE and not self.reserved:
            self._freeze_locked()
        self._cond.notify_all()

    def _init_done_locked(self) -> None:
        """INIT has ended well: record when, and tell telemetry subscribers."""
        self.init_done_ns = time.time_ns()
        self._report_init_locked(platform_events.SUCCESS, self.init_done_ns)

    def _report_init_locked(self, status: str, end_ns: int, error_type: str | None = None) -> None:
        """``platform.initRuntimeDone`` and ``platform.initReport``, once per environment."""
        if self._init_reported:
            return
        self._init_reported = True
        kind = self.initialization_type
        self._telemetry.publish(
            platform_events.INIT_RUNTIME_DONE,
            platform_events.init_runtime_done(kind, status, error_type),
            end_ns,
        )
        self._telemetry.publish(
            platform_events.INIT_REPORT,
            platform_events.init_report(
                kind, status, (end_ns - self.spawn_start_ns) / 1e6, error_type
            ),
            end_ns,
        )
        self._telemetry.end_init()

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
            self._report_init_locked("timeout", time.time_ns(), "Sandbox.Timedout")
            self._kill_locked("init-timeout")
            return truth.TIMEOUT
        if self.init_error is not None:
            self._report_init_locked("error", time.time_ns(), self.init_error_type)
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
        self.restore_start_ns = time.time_ns()
        self._telemetry.publish(
            platform_events.RESTORE_START,
            platform_events.restore_start(self.function),
            self.restore_start_ns,
        )
        self._restore_requested = True
        self._cond.notify_all()
        outcome = self._init_outcome_locked(time.monotonic() + init_timeout_s)
        end_ns = self.restored_next_ns if outcome is None else None
        end_ns = end_ns or time.time_ns()
        status = platform_events.SUCCESS if outcome is None else outcome
        error_type = None if outcome is None else self.init_error_type
        self._telemetry.publish(
            platform_events.RESTORE_RUNTIME_DONE,
            platform_events.restore_runtime_done(status, error_type),
            end_ns,
        )
        self._telemetry.publish(
            platform_events.RESTORE_REPORT,
            platform_events.restore_report(
                status, (end_ns - self.restore_start_ns) / 1e6, error_type
            ),
            end_ns,
        )
        return outcome

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
            self._queue_for_extensions_locked(
                {
                    "eventType": "SHUTDOWN",
                    "shutdownReason": shutdown_reason,
                    "deadlineMs": deadline_ms,
                }
            )
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
                restore_start_ns=self.restore_start_ns,
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
        return self._log_file.text()

    def _log(self, line: str) -> None:
        self._log_file.write(line)

    def _queue_for_extensions_locked(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every extension registered for its ``eventType``."""
        for ext in self._extensions:
            if event["eventType"] in ext.events:
                ext.queue.append(event)
        self._cond.notify_all()

    def _gone(self) -> Reply:
        return Reply.error(410, "Environment.Gone", f"environment {self.id} has ended")

    def _record_init_error_locked(self, error_type: str | None, body: bytes, hint: str) -> None:
        parsed = parse_payload(body) if body else {}
        self.init_error = parsed
        self.init_error_type = error_type or (
            parsed.get("errorType") if isinstance(parsed, dict) else None
        )
        self._end_reason_hint = hint
        self._cond.notify_all()
