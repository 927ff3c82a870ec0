"""The local Lambda: a pool of execution environments serving one function."""

from __future__ import annotations

import atexit
import itertools
import json
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from lifecycle_probe.emulator import truth
from lifecycle_probe.emulator.environment import ExecutionEnvironment
from lifecycle_probe.emulator.function import (
    ON_DEMAND,
    PROACTIVE,
    PROVISIONED_CONCURRENCY,
    SNAP_START,
    FunctionConfig,
)
from lifecycle_probe.emulator.invocation import Invocation, new_trace_id
from lifecycle_probe.emulator.managed_instances import ManagedInstancesEnvironment
from lifecycle_probe.emulator.process import Spawner
from lifecycle_probe.emulator.truth import EnvironmentInfo, InvocationResult

__all__ = ["EmulatorError", "EmulatorTimeout", "LocalLambda"]

PRE_INITIALISE_TYPES = (PROVISIONED_CONCURRENCY, PROACTIVE, SNAP_START)


class EmulatorError(RuntimeError):
    """The local Lambda was used wrongly or could not do what it was asked."""


class EmulatorTimeout(EmulatorError):
    """A bounded wait of the local Lambda ran out."""


# Every started local Lambda, so that interpreter exit kills their runtimes even when
# nobody called close().
_LIVE: weakref.WeakSet[LocalLambda] = weakref.WeakSet()


def _close_all() -> None:
    for local_lambda in list(_LIVE):
        local_lambda.close()


atexit.register(_close_all)


def _encode_event(event: Any) -> bytes:
    if isinstance(event, (bytes, bytearray)):
        return bytes(event)
    return json.dumps(event).encode()


def _header_json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


class LocalLambda:
    """A local Lambda serving ``function`` from a pool of real runtime processes.

    A request takes an idle environment (provisioned ones first, then the most recently
    used) or, finding none, initialises a new one of the function's init type: that is
    how concurrent requests scale out. Environments idle for ``idle_timeout_s`` are
    reaped (provisioned ones are kept). Snap-start environments are held, frozen, at
    ``restore/next`` for ``snapshot_pause_s`` after INIT, standing for the snapshot.
    INIT (and restore) must finish within ``init_timeout_s``. ``shutdown_grace_s`` is
    how long an environment with extensions gets between SHUTDOWN and SIGKILL.
    ``provisioned_concurrency`` environments are initialised by :meth:`start`.
    Process output goes to one log file per environment under ``log_dir`` (default: a
    temporary directory deleted by :meth:`close`).

    Use it as a context manager, or call :meth:`start` and :meth:`close`. Methods are
    thread-safe.

    **Lambda Managed Instances.** With ``FunctionConfig(max_concurrency=N)`` every
    environment is a
    :class:`~lifecycle_probe.emulator.managed_instances.ManagedInstancesEnvironment`:
    one runtime process run with ``AWS_LAMBDA_MAX_CONCURRENCY=N``, whose N worker
    processes (forked by ``awslambdaric`` before any INIT) each run their own INIT and
    serve requests concurrently. Up to N requests are in flight in one environment
    (requests arriving while it initialises wait for it); more scale out to a new one.
    It is never frozen, a timed-out invocation does not end it, and the ground truth
    names the worker of each request (``InvocationResult.worker_pid``), cold for that
    worker's first. Only on-demand scale-out and :meth:`pre_initialise` with
    ``"proactive"`` apply (Lambda Managed Instances have no provisioned concurrency and
    no SnapStart).
    """

    def __init__(
        self,
        function: FunctionConfig,
        *,
        idle_timeout_s: float = 300.0,
        snapshot_pause_s: float = 0.2,
        init_timeout_s: float = 10.0,
        shutdown_grace_s: float = 0.5,
        provisioned_concurrency: int = 0,
        log_dir: str | Path | None = None,
    ) -> None:
        if idle_timeout_s <= 0 or init_timeout_s <= 0:
            raise ValueError("idle_timeout_s and init_timeout_s must be positive")
        if snapshot_pause_s < 0 or shutdown_grace_s < 0 or provisioned_concurrency < 0:
            raise ValueError(
                "snapshot_pause_s, shutdown_grace_s and provisioned_concurrency must not be "
                "negative"
            )
        max_concurrency = function.max_concurrency
        if max_concurrency is not None:
            if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
                raise ValueError(f"max_concurrency must be an int, got {max_concurrency!r}")
            if max_concurrency < 1:
                raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
            if function.init_type != ON_DEMAND or provisioned_concurrency:
                raise ValueError(
                    "Lambda Managed Instances (max_concurrency) scale out on demand only: "
                    "no snap-start, no provisioned concurrency"
                )
        self.function = function
        self.idle_timeout_s = idle_timeout_s
        self.snapshot_pause_s = snapshot_pause_s
        self.init_timeout_s = init_timeout_s
        self.shutdown_grace_s = shutdown_grace_s
        self.provisioned_concurrency = provisioned_concurrency
        self._requested_log_dir = Path(log_dir) if log_dir is not None else None
        self._log_dir: Path | None = None
        self._lock = threading.Lock()
        self._envs: list[ExecutionEnvironment] = []
        self._by_id: dict[str, ExecutionEnvironment] = {}
        self._truth: list[InvocationResult] = []
        self._numbers = itertools.count(1)
        self._spawner = Spawner()
        self._closed = threading.Event()
        self._started = False
        self._reaper: threading.Thread | None = None

    def __repr__(self) -> str:
        return (
            f"<LocalLambda {self.function.function_name} {self.function.handler} "
            f"environments={len(self._envs)} closed={self._closed.is_set()}>"
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalLambda:
        """Start the pool (idempotent); initialise ``provisioned_concurrency`` environments."""
        with self._lock:
            if self._closed.is_set():
                raise EmulatorError("this local Lambda is closed")
            if self._started:
                return self
            self._started = True
            if self._requested_log_dir is not None:
                self._requested_log_dir.mkdir(parents=True, exist_ok=True)
                self._log_dir = self._requested_log_dir
            else:
                self._log_dir = Path(tempfile.mkdtemp(prefix="lifecycle-probe-emulator-"))
            _LIVE.add(self)
            self._spawner.start()
            self._reaper = threading.Thread(
                target=self._reap_idle, name="lambda-reaper", daemon=True
            )
            self._reaper.start()
        if self.provisioned_concurrency:
            self.provision(self.provisioned_concurrency)
        return self

    def close(self) -> None:
        """Kill every environment (SIGKILL), stop serving, delete temporary logs (idempotent)."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            envs = list(self._envs)
        for env in envs:
            env.kill("closed")
        for env in envs:
            env.join()
        self._spawner.stop()
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join(timeout=5.0)
        _LIVE.discard(self)
        if self._requested_log_dir is None and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> LocalLambda:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed.is_set()

    def _check_running(self) -> None:
        if self._closed.is_set():
            raise EmulatorError("this local Lambda is closed")
        if not self._started:
            raise EmulatorError("call start() first, or use the local Lambda as a context manager")

    # -- environments ----------------------------------------------------------------------

    def _create_locked(self, init_type: str, *, claimed_by: str | None) -> ExecutionEnvironment:
        assert self._log_dir is not None
        env: ExecutionEnvironment
        if self.function.max_concurrency is not None:
            env = ManagedInstancesEnvironment(
                f"env-{next(self._numbers)}",
                self.function,
                init_type,
                max_concurrency=self.function.max_concurrency,
                log_dir=self._log_dir,
                spawner=self._spawner,
                snapshot_pause_s=self.snapshot_pause_s,
                shutdown_grace_s=self.shutdown_grace_s,
                claimed_by=claimed_by,
            )
        else:
            env = ExecutionEnvironment(
                f"env-{next(self._numbers)}",
                self.function,
                init_type,
                log_dir=self._log_dir,
                spawner=self._spawner,
                snapshot_pause_s=self.snapshot_pause_s,
                shutdown_grace_s=self.shutdown_grace_s,
                claimed_by=claimed_by,
            )
        self._envs.append(env)
        self._by_id[env.id] = env
        return env

    def _acquire(self, request_id: str) -> ExecutionEnvironment:
        """Claim an idle environment, or initialise a new one for this request."""
        with self._lock:
            self._check_running()
            idle = [env for env in self._envs if env.claimable]
            # Provisioned environments serve first; otherwise the most recently used, so
            # that the others grow idle and are reaped, as Lambda's pool shrinks.
            idle.sort(key=lambda env: (env.init_type != PROVISIONED_CONCURRENCY, -env.idle_since))
            for env in idle:
                if env.try_claim(request_id):
                    return env
            env = self._create_locked(self.function.init_type, claimed_by=request_id)
        try:
            env.start()
        except BaseException:
            env.kill("init-error")
            raise
        return env

    def pre_initialise(self, count: int, init_type: str = PROACTIVE) -> list[EnvironmentInfo]:
        """Initialise ``count`` environments ahead of demand and wait for their INIT.

        ``init_type`` is ``"proactive"`` (Lambda's own ahead-of-demand init; the runtime
        sees ``AWS_LAMBDA_INITIALIZATION_TYPE=on-demand``), ``"provisioned-concurrency"``
        or ``"snap-start"`` (held at ``restore/next`` until first needed). Returns their
        snapshots; one whose INIT failed is returned dead, with ``init_error`` set.
        """
        if init_type not in PRE_INITIALISE_TYPES:
            raise ValueError(
                f"init_type must be one of {', '.join(PRE_INITIALISE_TYPES)}, got {init_type!r}"
            )
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        if self.function.max_concurrency is not None and init_type != PROACTIVE:
            raise ValueError(
                "Lambda Managed Instances (max_concurrency) have no provisioned concurrency "
                f"and no SnapStart: only 'proactive' can be pre-initialised, got {init_type!r}"
            )
        with self._lock:
            self._check_running()
            envs = [self._create_locked(init_type, claimed_by=None) for _ in range(count)]
        for env in envs:
            env.start()
        for env in envs:
            env.await_init(self.init_timeout_s)
        return [env.info() for env in envs]

    def provision(self, count: int) -> list[EnvironmentInfo]:
        """Initialise ``count`` provisioned-concurrency environments; see :meth:`pre_initialise`."""
        return self.pre_initialise(count, PROVISIONED_CONCURRENCY)

    def _environment(self, env_id: str) -> ExecutionEnvironment:
        with self._lock:
            env = self._by_id.get(env_id)
        if env is None:
            raise KeyError(f"no environment {env_id!r}")
        return env

    @property
    def environments(self) -> list[EnvironmentInfo]:
        """Snapshots of every environment ever started, oldest first (dead ones included)."""
        with self._lock:
            envs = list(self._envs)
        return [env.info() for env in envs]

    def environment(self, env_id: str) -> EnvironmentInfo:
        """A snapshot of one environment."""
        return self._environment(env_id).info()

    def logs(self, env_id: str) -> str:
        """The environment's stdout and stderr (plus START/END/REPORT lines), as text."""
        env = self._environment(env_id)
        try:
            return env.logs()
        except FileNotFoundError:
            raise EmulatorError(
                f"the logs of {env_id} are gone: temporary logs are deleted by close(); "
                "pass log_dir= to keep them"
            ) from None

    def kill(self, env_id: str) -> None:
        """SIGKILL an environment now; a request in it fails with ``Runtime.ExitError``."""
        env = self._environment(env_id)
        env.kill("killed")
        env.join()

    def reap(self, env_id: str) -> None:
        """Shut an environment down now as an idle reap does (SHUTDOWN ``spindown``)."""
        env = self._environment(env_id)
        env.shutdown("spindown", "reaped")
        env.join()

    def wait_idle(self, env_id: str | None = None, timeout_s: float = 10.0) -> None:
        """Wait until the environment (default: every live one) is frozen awaiting work.

        Raise :class:`EmulatorTimeout` if that takes longer than ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        if env_id is not None:
            envs = [self._environment(env_id)]
        else:
            with self._lock:
                envs = list(self._envs)
        for env in envs:
            if not env.wait_settled(max(0.0, deadline - time.monotonic())):
                raise EmulatorTimeout(
                    f"{env.id} did not settle within {timeout_s} s (state {env.state})"
                )

    def freeze_for(self, seconds: float) -> None:
        """Let ``seconds`` pass with no requests: idle environments stay frozen and the
        reaper keeps running (returns early if the local Lambda is closed)."""
        self._closed.wait(seconds)

    def _reap_idle(self) -> None:
        period = max(0.01, min(self.idle_timeout_s / 4, 0.5))
        while not self._closed.wait(period):
            now = time.monotonic()
            with self._lock:
                envs = list(self._envs)
            for env in envs:
                if self._closed.is_set():
                    return
                if env.begin_reap(self.idle_timeout_s, now):
                    env.shutdown("spindown", "reaped")
                    env.join()

    # -- requests --------------------------------------------------------------------------

    @property
    def truth(self) -> list[InvocationResult]:
        """Every request served so far, in completion order."""
        with self._lock:
            return list(self._truth)

    def invoke(
        self,
        event: Any = None,
        *,
        client_context: Any = None,
        cognito_identity: Any = None,
        trace_id: str | None = None,
        wait_for_freeze: bool = True,
    ) -> InvocationResult:
        """Serve one request and return what happened.

        ``event`` is JSON-encoded (``bytes`` are sent as they are; ``None`` is ``{}``).
        ``client_context`` and ``cognito_identity`` (dicts or JSON text) are passed in
        their ``Lambda-Runtime-*`` headers; ``trace_id`` replaces the generated X-Ray
        header. With ``wait_for_freeze`` (the default) the call returns once the
        environment has settled again after the response (runtime and extensions
        waiting, process frozen), so back-to-back calls reuse it deterministically;
        otherwise it returns as soon as the response is in, as Lambda's Invoke API does.
        """
        self._check_running()
        start_ns = time.time_ns()
        invocation = Invocation(
            request_id=str(uuid.uuid4()),
            body=_encode_event({} if event is None else event),
            trace_id=trace_id or new_trace_id(),
            client_context=_header_json(client_context),
            cognito_identity=_header_json(cognito_identity),
        )
        env = self._acquire(invocation.request_id)
        served = env.invoke(
            invocation, init_timeout_s=self.init_timeout_s, wait_for_freeze=wait_for_freeze
        )
        began_ns = served.delivered_ns or start_ns
        result = InvocationResult(
            request_id=invocation.request_id,
            environment=env.id,
            pid=env.pid,
            cold=served.cold,
            init_type=env.init_type,
            start_type_truth=(
                truth.WARM
                if not served.cold
                else served.start_type or truth.START_TYPE_OF_FIRST_INVOKE[env.init_type]
            ),
            start_ns=start_ns,
            delivered_ns=served.delivered_ns,
            end_ns=served.end_ns,
            duration_ms=(served.end_ns - began_ns) / 1e6,
            outcome=served.outcome,
            response=served.response,
            error=served.error,
            error_type=served.error_type,
            init_duration_ms=served.init_duration_ms,
            trace_id=invocation.trace_id,
            log_stream=env.log_stream,
            worker_pid=served.worker_pid,
        )
        with self._lock:
            self._truth.append(result)
        return result

    def invoke_many(
        self,
        events: Iterable[Any],
        concurrency: int = 1,
        *,
        on_result: Callable[[InvocationResult], None] | None = None,
        wait_for_freeze: bool = True,
    ) -> list[InvocationResult]:
        """Serve ``events`` with up to ``concurrency`` requests in flight at once.

        Results come back in the order of ``events``; ``on_result`` is called (from a
        worker thread) as each request finishes.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        events = list(events)

        def one(event: Any) -> InvocationResult:
            result = self.invoke(event, wait_for_freeze=wait_for_freeze)
            if on_result is not None:
                on_result(result)
            return result

        if concurrency == 1:
            return [one(event) for event in events]
        with ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="lambda-request"
        ) as requests:
            futures = [requests.submit(one, event) for event in events]
            return [future.result() for future in futures]
