"""The soak's seeded workload: two functions in the local Lambda, driven by one random
stream of operations, with every request, its event and its environment's memory noted.

Functions: ``main`` (on-demand, one provisioned environment from the start, more
provisioned now and then, proactive ones ahead of demand) and ``snap`` (SnapStart: every
new environment is restored). Operations: sequences and concurrent bursts of requests,
pauses (frozen environments), pauses past the idle timeout (reaps), kills of idle
environments, proactive initialisation, provisioning, handler exceptions of several kinds
(``SystemExit`` and ``KeyboardInterrupt`` end the runtime, as on Lambda), timeouts
(the environment is killed), a failed INIT now and then (a token the next on-demand INIT
takes), and collector faults for the next few operations (refusing, 503, 429, hanging,
slow, resetting).

The operations, and the events they send, depend on the seed only: a second run of the
same seed (the baseline without the probe) sends the same events, numbered alike, so
that requests can be paired. Choices that depend on the local Lambda's state (which idle
environment to kill) draw from a second stream, so the first never drifts.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle_probe.emulator import FunctionConfig, InvocationResult, LocalLambda
from tests.soak.collector import SoakCollector

HANDLERS = Path(__file__).resolve().parent / "handlers"
TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 1.5
PROACTIVE_GAP_MS = 300
# The after-response flush's bound (the probe's default is 2000 ms; the function's 1 s
# deadline caps it at about 0.9 s anyway). Each invocation under a hanging collector
# waits this long after its response.
FLUSH_TIMEOUT_MS = 1000
MAX_PROVISIONED = 2

OPERATIONS = [
    ("sequence", 30),
    ("burst", 20),
    ("pause", 15),
    ("reap-pause", 2),
    ("kill", 5),
    ("proactive", 3),
    ("provision", 2),
    ("failure", 5),
    ("timeout", 1),
    ("init-failure", 1),
    ("collector-fault", 3),
]
EXCEPTIONS = [
    ("value_error", 4),
    ("own_class", 3),
    ("chained", 3),
    ("no_message", 2),
    ("unprintable", 1),
    ("system_exit", 1),
    ("keyboard_interrupt", 1),
]
COLLECTOR_FAULTS = [
    ("refuse", 3),
    ("status:503", 2),
    ("status:429", 1),
    ("hang", 1),
    ("slow", 1),
    ("reset", 1),
]
SNAP_SHARE = 0.2


@dataclass
class Sent:
    """One request as the soak sent it."""

    number: int  # the event's number in the seeded stream (pairs runs of one seed)
    function: str
    operation: str
    sleep_s: float
    kind: str | None = None  # the exception asked for
    returned_ns: int = 0  # when invoke() returned (the environment settled again)
    rss_kb: int | None = None  # the environment's VmRSS right after, if alive
    collector_mode: str = "ok"


@dataclass
class RunRecord:
    """Everything a run leaves for the analysis."""

    probed: bool
    seed: int
    elapsed_s: float = 0.0
    stopped_early: str | None = None
    operations: Counter[str] = field(default_factory=Counter)
    sent: dict[str, Sent] = field(default_factory=dict)  # by request id
    truth: dict[str, list[InvocationResult]] = field(default_factory=dict)
    environments: dict[str, list[Any]] = field(default_factory=dict)  # EnvironmentInfo
    # function -> env id -> [(nth invocation, VmRSS kB)]
    rss: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)
    emulators: dict[str, LocalLambda] = field(default_factory=dict)
    init_failure_tokens: int = 0
    operation_errors: list[str] = field(default_factory=list)


def read_rss_kb(pid: int | None) -> int | None:
    """VmRSS of a process, from ``/proc/<pid>/status`` (None if it is gone)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def function_env(
    probed: bool,
    control: Path,
    collector: SoakCollector | None,
    out: Path,
    exporters: str,
    flush_timeout_ms: int = FLUSH_TIMEOUT_MS,
) -> dict[str, str]:
    env = {
        "SOAK_CONTROL_DIR": str(control),
        "SOAK_INIT_SLEEP_S": "0.02",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    if probed:
        assert collector is not None
        env.update(
            {
                "LIFECYCLE_PROBE_HANDLER": "soak_fn.handler",
                "LIFECYCLE_PROBE_EXPORTER": exporters,
                "LIFECYCLE_PROBE_OTLP_FILE": str(out / "otlp.jsonl"),
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                "LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS": str(flush_timeout_ms),
                "LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS": str(PROACTIVE_GAP_MS),
            }
        )
    return env


class Workload:
    """One run: ``probed`` (zero-code entry) or the bare twin, of ``invocations`` requests."""

    def __init__(
        self,
        *,
        seed: int,
        invocations: int,
        probed: bool,
        out: Path,
        max_s: float,
        collector: SoakCollector | None,
        exporters: str,
        code: Path | None = None,
        flush_timeout_ms: int = FLUSH_TIMEOUT_MS,
    ) -> None:
        self.seed = seed
        self.invocations = invocations
        self.probed = probed
        self.out = out
        self.max_s = max_s
        self.collector = collector
        self.ops = random.Random(seed)
        self.picks = random.Random(seed + 1_000_003)
        self.record = RunRecord(probed=probed, seed=seed)
        self._numbers = 0
        self._lock = threading.Lock()
        self._served: Counter[str] = Counter()  # env id -> invocations seen
        self._fault_ops_left = 0
        control = out / "control"
        control.mkdir(parents=True, exist_ok=True)
        self.control = control
        handler = "lifecycle_probe.handler.handler" if probed else "soak_fn.handler"
        env = function_env(probed, control, collector, out, exporters, flush_timeout_ms)
        if code is not None:
            # a frozen copy of the probe's source, ahead of the checkout on the path
            env["PYTHONPATH"] = str(code)
        self.main = LocalLambda(
            FunctionConfig(
                handler, HANDLERS, env=env, timeout_s=TIMEOUT_S, function_name="soak-main"
            ),
            idle_timeout_s=IDLE_TIMEOUT_S,
            provisioned_concurrency=1,
            log_dir=out / "logs" / "main",
        )
        snap_env = {**env, "SOAK_CONTROL_DIR": str(out / "control-snap")}
        self.snap = LocalLambda(
            FunctionConfig(
                handler,
                HANDLERS,
                env=snap_env,
                timeout_s=TIMEOUT_S,
                function_name="soak-snap",
                init_type="snap-start",
            ),
            idle_timeout_s=IDLE_TIMEOUT_S,
            snapshot_pause_s=0.05,
            log_dir=out / "logs" / "snap",
        )
        self.functions = {"main": self.main, "snap": self.snap}

    # -- requests ---------------------------------------------------------------------------

    def _event(
        self, function: str, operation: str, sleep_s: float, kind: str | None = None
    ) -> tuple[dict[str, Any], Sent]:
        self._numbers += 1
        event: dict[str, Any] = {"i": self._numbers}
        if sleep_s:
            event["sleep_s"] = sleep_s
        if kind is not None:
            event["raise"] = kind
        mode = self.collector.mode if self.collector is not None else "ok"
        return event, Sent(self._numbers, function, operation, sleep_s, kind, collector_mode=mode)

    def _note(self, function: str, sent: Sent, result: InvocationResult) -> None:
        sent.returned_ns = time.time_ns()
        rss = read_rss_kb(result.pid) if result.delivered_ns else None
        with self._lock:
            self.record.sent[result.request_id] = sent
            if rss is not None and result.outcome != "timeout":
                sent.rss_kb = rss
                key = f"{function}/{result.environment}"
                self._served[key] += 1
                per_env = self.record.rss.setdefault(function, {})
                per_env.setdefault(result.environment, []).append((self._served[key], rss))

    def invoke(
        self, function: str, operation: str, sleep_s: float = 0.0, kind: str | None = None
    ) -> None:
        event, sent = self._event(function, operation, sleep_s, kind)
        result = self.functions[function].invoke(event)
        self._note(function, sent, result)

    def burst(self, function: str, operation: str, sleeps: list[float], concurrency: int) -> None:
        pairs = [self._event(function, operation, s) for s in sleeps]
        by_number = {event["i"]: sent for event, sent in pairs}
        results: dict[int, InvocationResult] = {}

        def on_result(result: InvocationResult) -> None:
            # invoke_many calls this as each request finishes: note its return time now
            number = self._number_of(result)
            if number is not None:
                results[number] = result
                self._note(function, by_number[number], result)

        done = self.functions[function].invoke_many(
            [event for event, _ in pairs], concurrency=concurrency, on_result=on_result
        )
        for result in done:  # an event whose number could not be read back (INIT failure)
            if result.request_id not in self.record.sent:
                for number, sent in by_number.items():
                    if number not in results:
                        results[number] = result
                        self._note(function, sent, result)
                        break

    @staticmethod
    def _number_of(result: InvocationResult) -> int | None:
        if isinstance(result.response, dict) and isinstance(result.response.get("i"), int):
            return int(result.response["i"])
        return None

    # -- the run ----------------------------------------------------------------------------

    def served(self) -> int:
        return len(self.main.truth) + len(self.snap.truth)

    def run(self) -> RunRecord:
        started = time.monotonic()
        record = self.record
        names = [name for name, _ in OPERATIONS]
        weights = [weight for _, weight in OPERATIONS]
        with self.main, self.snap:
            while self.served() < self.invocations:
                if time.monotonic() - started > self.max_s:
                    record.stopped_early = f"time limit {self.max_s:.0f} s"
                    break
                operation = self.ops.choices(names, weights)[0]
                function = "snap" if self.ops.random() < SNAP_SHARE else "main"
                record.operations[operation] += 1
                try:
                    self._operation(operation, function)
                except Exception as exc:  # the local Lambda refused: noted, and on
                    record.operation_errors.append(f"{operation} {function}: {exc!r}")
                self._collector_tick()
            if self.collector is not None:
                self.collector.set_mode("ok")
            # The final drain: one request for every live environment, the collector
            # answering, so that what an environment keeps for a retry (an export that
            # failed) goes out before the local Lambda is closed.
            for name in self.functions:
                self._drain(name)
            record.truth = {name: fn.truth for name, fn in self.functions.items()}
            record.environments = {name: fn.environments for name, fn in self.functions.items()}
        record.emulators = dict(self.functions)
        record.elapsed_s = time.monotonic() - started
        return record

    def _drain(self, function: str) -> None:
        emulator = self.functions[function]
        live = [e for e in emulator.environments if e.alive and e.state in ("idle", "snapshot")]
        if live:
            self.record.operations["final-drain"] += 1
            self.burst(function, "final-drain", [0.3] * len(live), len(live))

    def _collector_tick(self) -> None:
        if self._fault_ops_left > 0:
            self._fault_ops_left -= 1
            if self._fault_ops_left == 0 and self.collector is not None:
                self.collector.set_mode("ok")

    def _operation(self, operation: str, function: str) -> None:
        ops = self.ops
        emulator = self.functions[function]
        if operation == "sequence":
            for _ in range(ops.randint(3, 12)):
                self.invoke(function, operation, ops.choice([0.0, 0.0, 0.0, 0.01]))
        elif operation == "burst":
            count = ops.randint(2, 6)
            sleeps = [round(ops.uniform(0.02, 0.15), 4) for _ in range(count)]
            self.burst(function, operation, sleeps, ops.randint(2, 4))
        elif operation == "pause":
            emulator.freeze_for(ops.uniform(0.05, 0.3))
        elif operation == "reap-pause":
            emulator.freeze_for(IDLE_TIMEOUT_S + 0.6)
        elif operation == "kill":
            ops.random()  # keeps the stream aligned whatever the state
            idle = [e for e in emulator.environments if e.alive and e.state == "idle"]
            if idle:
                emulator.kill(self.picks.choice(idle).id)
        elif operation == "proactive":
            ops.random()
            self.main.pre_initialise(1)
            self.main.freeze_for(PROACTIVE_GAP_MS / 1000 + 0.1)
        elif operation == "provision":
            ops.random()
            live = [
                e
                for e in self.main.environments
                if e.alive and e.init_type == "provisioned-concurrency"
            ]
            if len(live) < MAX_PROVISIONED:
                self.main.provision(1)
        elif operation == "failure":
            kinds = [name for name, _ in EXCEPTIONS]
            kind = ops.choices(kinds, [w for _, w in EXCEPTIONS])[0]
            self.invoke(function, operation, 0.0, kind)
        elif operation == "timeout":
            self.invoke(function, operation, TIMEOUT_S + 1)
        elif operation == "init-failure":
            self._init_failure()
        elif operation == "collector-fault":
            modes = [name for name, _ in COLLECTOR_FAULTS]
            mode = ops.choices(modes, [w for _, w in COLLECTOR_FAULTS])[0]
            count = ops.randint(1, 2) if mode == "hang" else ops.randint(1, 4)
            if self.collector is not None:
                self.collector.set_mode(mode)
                self._fault_ops_left = count + 1  # this op's tick counts one

    def _init_failure(self) -> None:
        """Leave the token, then make the main function scale out: one more concurrent
        request than it has idle environments."""
        ops = self.ops
        (self.control / "init-fail").write_text("take me")
        self.record.init_failure_tokens += 1
        extra = ops.randint(1, 2)
        idle = sum(1 for e in self.main.environments if e.alive and e.state == "idle")
        count = min(idle + extra, 8)
        self.burst("main", "init-failure", [0.2] * count, count)
