"""Runtime processes: spawning them so that none outlives the emulator, signalling them.

Every runtime process is started by one long-lived *spawner* thread per local Lambda,
in its own session (so its whole process group can be frozen, thawed and killed at
once) and with ``PR_SET_PDEATHSIG=SIGKILL`` (so the kernel kills it if the emulator
dies without cleaning up).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Spawned",
    "Spawner",
    "client_socket_inode",
    "descendants",
    "process_state",
    "signal_group",
    "socket_owner",
    "wait_exited",
    "wait_stopped",
]

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


# Looked up once in the parent: the child, between fork and exec, should do as little
# as possible (no dlopen, no imports).
_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec: tie its life to the spawning thread."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died between fork and prctl; then nobody would ever kill us.
    if os.getppid() != parent_pid:
        os._exit(70)


@dataclass(frozen=True)
class Spawned:
    """A started runtime process and the wall-clock instants around its start."""

    process: subprocess.Popen[bytes]
    spawn_start_ns: int
    spawn_end_ns: int


class Spawner:
    """Starts runtime processes from one dedicated thread.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the
    process; so children must not be forked from short-lived threads (such as the
    workers of ``invoke_many``). This thread lives as long as its local Lambda.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[_SpawnJob, Future[Spawned]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lambda-spawner", daemon=True)
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the spawner thread (idempotent)."""
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        timeout_s: float = 30.0,
    ) -> Spawned:
        """Start ``argv`` with stdout and stderr appended to ``log_path``; raise on failure."""
        with self._lock:
            if not self._started or self._stopped:
                raise RuntimeError("the spawner is not running")
        future: Future[Spawned] = Future()
        self._jobs.put((_SpawnJob(tuple(argv), cwd, dict(env), log_path), future))
        return future.result(timeout=timeout_s)

    def stop(self) -> None:
        """Stop the spawner thread; children it started get SIGKILL from the kernel."""
        with self._lock:
            if not self._started or self._stopped:
                return
            self._stopped = True
        self._jobs.put(None)
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job.run())
            except BaseException as exc:  # handed to the caller, who reports it
                future.set_exception(exc)


@dataclass(frozen=True)
class _SpawnJob:
    argv: tuple[str, ...]
    cwd: Path
    env: dict[str, str]
    log_path: Path

    def run(self) -> Spawned:
        parent_pid = os.getpid()
        with open(self.log_path, "ab", buffering=0) as log:
            spawn_start_ns = time.time_ns()
            process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(parent_pid),
                close_fds=True,
            )
            spawn_end_ns = time.time_ns()
        return Spawned(process, spawn_start_ns, spawn_end_ns)


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_exited(pid: int) -> None:
    """Block until ``pid`` (a child) has exited, without reaping it.

    Leaving the zombie in place keeps the pid (and so the process group id) from being
    reused while the group's stragglers are killed.
    """
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def process_state(pid: int | None) -> str | None:
    """The one-letter scheduler state of ``pid`` from /proc (``T`` = stopped), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return data[data.rindex(b")") + 2 :].split(b" ", 1)[0].decode()


def wait_stopped(pid: int, timeout_s: float = 1.0) -> bool:
    """Wait until SIGSTOP has taken effect (state ``T``); True if it has."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = process_state(pid)
        if state is None or state in "Tt":
            return state is not None
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0005)


# -- which process holds a connection (Lambda Managed Instances) ----------------------


def descendants(pid: int) -> list[int]:
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


def client_socket_inode(local_port: int, remote_port: int) -> int | None:
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


def socket_owner(inode: int, candidates: list[int]) -> int | None:
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
