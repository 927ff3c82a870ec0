"""Lambda Managed Instances: one environment, N worker processes serving concurrently."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from lifecycle_probe.emulator import truth
from lifecycle_probe.emulator.delivery import SETTLE_SLACK_S
from lifecycle_probe.emulator.environment import ExecutionEnvironment
from lifecycle_probe.emulator.function import MANAGED_INSTANCES_INITIALIZATION_TYPE, FunctionConfig
from lifecycle_probe.emulator.invocation import (
    Invocation,
    Served,
    event_reply,
    parse_payload,
    served_from,
)
from lifecycle_probe.emulator.lifecycle import DEAD, IDLE, INIT, INVOKING, SHUTDOWN
from lifecycle_probe.emulator.process import (
    Spawner,
    client_socket_inode,
    descendants,
    socket_owner,
)
from lifecycle_probe.emulator.runtime_api import ACCEPTED, Peer, Reply

__all__ = ["ManagedInstancesEnvironment"]


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

    @property
    def initialization_type(self) -> str:
        """Lambda Managed Instances give every environment one value."""
        return MANAGED_INSTANCES_INITIALIZATION_TYPE

    def environment_variables(self) -> dict[str, str]:
        """Those of any environment, plus ``AWS_LAMBDA_MAX_CONCURRENCY`` and the
        Managed Instances ``AWS_LAMBDA_INITIALIZATION_TYPE``."""
        variables = super().environment_variables()
        variables["AWS_LAMBDA_MAX_CONCURRENCY"] = str(self.max_concurrency)
        variables["AWS_LAMBDA_INITIALIZATION_TYPE"] = self.initialization_type
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
            self._init_done_locked()
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
        self._started_locked(invocation)
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
        served = served_from(
            invocation,
            cold=invocation.worker_first,
            before_timeout=answered,
            end_reason=self.end_reason,
            timeout_s=timeout_s,
            init_duration_ms=init_duration_ms,
            start_type=start_type,
        )
        if served.outcome == truth.TIMEOUT:
            # Not enforced: the worker goes on, and stays busy until it asks again.
            self._log(f"{invocation.request_id} Task timed out after {timeout_s:.2f} seconds")
            invocation.done = timed_out = True  # a late response is refused
            if invocation in self._queue:
                self._queue.remove(invocation)
            elif invocation.delivered_ns:
                self._abandoned.add(invocation.request_id)
        self._report_locked(invocation.request_id, served)
        if wait_for_freeze and not timed_out and worker is not None and self.state != DEAD:
            # Back-to-back requests find the worker waiting again (deterministic reuse).
            asked = invocation.worker_asks
            if not self._wait_locked(
                lambda: self.state in (DEAD, SHUTDOWN) or worker.asks > asked,
                max(deadline, time.monotonic() + SETTLE_SLACK_S),
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
        inode = client_socket_inode(peer[1], self._server.server_port)
        if inode is None:
            return None
        known = [pid for pid in self._workers if isinstance(pid, int)]
        owner = socket_owner(inode, known)
        if owner is None:
            owner = socket_owner(inode, [*descendants(root), root])
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
            return event_reply(invocation, self.function.function_arn)

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
