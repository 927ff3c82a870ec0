"""One invocation on its way through an environment, and what became of it.

The mutable :class:`Invocation` is what the local Lambda hands an environment and the
runtime answers; the immutable :class:`Served` is what the environment hands back, built
by :func:`served_from`. :func:`event_reply` is the ``invocation/next`` answer that gives an
event to a runtime.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from lifecycle_probe.emulator import truth
from lifecycle_probe.emulator.runtime_api import Reply

__all__ = ["Invocation", "Served", "event_reply", "new_trace_id", "parse_payload", "served_from"]


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
    # The first invocation after a snap-start restore: from the restore's start to the
    # runtime's first invocation/next (after-restore hooks included).
    restore_duration_ms: float | None = None
    worker_pid: int | None = None
    # Managed Instances: the start type of a worker's first request (None: by init type).
    start_type: str | None = None


def served_from(
    invocation: Invocation,
    *,
    cold: bool,
    before_timeout: bool,
    end_reason: str | None,
    timeout_s: float,
    init_duration_ms: float | None = None,
    restore_duration_ms: float | None = None,
    start_type: str | None = None,
) -> Served:
    """What became of ``invocation``: the runtime's response or error if it came (``done``);
    else, ending now, the error Lambda gives the caller: the runtime exited, if the wait for
    the answer ended ``before_timeout`` (the environment died, ``end_reason``), or the
    invocation timed out after ``timeout_s`` (the outcome is then :data:`truth.TIMEOUT`)."""
    response = error = None
    if invocation.done:
        outcome = truth.OK if invocation.error is None else truth.ERROR
        end_ns, error_type = invocation.end_ns, invocation.error_type
        response, error = parse_payload(invocation.response), parse_payload(invocation.error)
    else:
        if before_timeout:
            outcome, error_type = truth.ERROR, "Runtime.ExitError"
            message = f"Runtime exited ({end_reason})"
        else:
            outcome, error_type = truth.TIMEOUT, "Sandbox.Timedout"
            message = f"Task timed out after {timeout_s:.2f} seconds"
        end_ns = time.time_ns()
        error = {
            "errorMessage": f"RequestId: {invocation.request_id} Error: {message}",
            "errorType": error_type,
        }
    return Served(
        cold=cold,
        outcome=outcome,
        delivered_ns=invocation.delivered_ns,
        end_ns=end_ns,
        response=response,
        error=error,
        error_type=error_type,
        init_duration_ms=init_duration_ms,
        restore_duration_ms=restore_duration_ms,
        worker_pid=invocation.worker_pid,
        start_type=start_type,
    )


def event_reply(invocation: Invocation, function_arn: str) -> Reply:
    """The answer to ``invocation/next`` that hands ``invocation`` to the runtime."""
    headers = {
        "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
        "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
        "Lambda-Runtime-Invoked-Function-Arn": function_arn,
        "Lambda-Runtime-Trace-Id": invocation.trace_id,
    }
    if invocation.client_context is not None:
        headers["Lambda-Runtime-Client-Context"] = invocation.client_context
    if invocation.cognito_identity is not None:
        headers["Lambda-Runtime-Cognito-Identity"] = invocation.cognito_identity
    return Reply(200, invocation.body, headers)
