"""Reading what the probe wrote in the local Lambda, to compare with its ground truth."""

from __future__ import annotations

from typing import Any

from lifecycle_probe.emulator import LocalLambda
from lifecycle_probe.sinks.console import read_lines


def probe_lines(emulator: LocalLambda) -> dict[str, list[dict[str, Any]]]:
    """The probe's console lines of every environment, keyed by the emulator's env id."""
    return {env.id: read_lines(emulator.logs(env.id)) for env in emulator.environments}


def invocation_lines(emulator: LocalLambda) -> dict[str, dict[str, Any]]:
    """Every invocation line the probe wrote, keyed by request id."""
    found: dict[str, dict[str, Any]] = {}
    for env_id, lines in probe_lines(emulator).items():
        for line in lines:
            if line["lifecycle_probe"] == "invocation":
                found[line["request_id"]] = {**line, "emulator_environment": env_id}
    return found


def init_lines(emulator: LocalLambda) -> dict[str, list[dict[str, Any]]]:
    """The INIT lines the probe wrote, per emulator environment."""
    return {
        env_id: [line for line in lines if line["lifecycle_probe"] == "init"]
        for env_id, lines in probe_lines(emulator).items()
    }


def disagreements(emulator: LocalLambda) -> list[str]:
    """Every request whose probe tags differ from the ground truth (empty when all agree)."""
    lines = invocation_lines(emulator)
    problems = []
    probe_env_of: dict[str, str] = {}
    for result in emulator.truth:
        if result.outcome == "timeout":
            continue  # the environment was killed mid-invocation: nothing to compare
        line = lines.get(result.request_id)
        if line is None:
            problems.append(
                f"{result.request_id}: no probe record ({result.outcome} {result.error_type})"
            )
            continue
        if line["start"] != result.start_type_truth:
            problems.append(
                f"{result.request_id} in {result.environment}: probe said {line['start']}, "
                f"truth is {result.start_type_truth}"
            )
        if line["emulator_environment"] != result.environment:
            problems.append(f"{result.request_id}: recorded in the wrong environment's log")
        known = probe_env_of.setdefault(result.environment, line["environment_id"])
        if known != line["environment_id"]:
            problems.append(f"{result.environment}: two probe environment ids")
    if len(set(probe_env_of.values())) != len(probe_env_of):
        problems.append("two emulator environments share a probe environment id")
    return problems


def worker_disagreements(emulator: LocalLambda) -> list[str]:
    """Like :func:`disagreements`, under Lambda Managed Instances: every worker process is
    an environment of the probe's. Each request's start type must match the truth, and
    its probe environment must be the one whose INIT record names the worker (its pid)
    that the local Lambda saw take the request; no two workers may share an id."""
    lines = invocation_lines(emulator)
    pid_of_probe_env: dict[str, int] = {}
    for env_lines in init_lines(emulator).values():
        for init in env_lines:
            if pid_of_probe_env.setdefault(init["environment_id"], init["pid"]) != init["pid"]:
                return [f"probe environment {init['environment_id']} has two INIT records"]
    problems = []
    probe_env_of: dict[int, str] = {}
    for result in emulator.truth:
        if result.outcome == "timeout":
            continue
        line = lines.get(result.request_id)
        if line is None:
            problems.append(
                f"{result.request_id}: no probe record ({result.outcome} {result.error_type})"
            )
            continue
        where = f"{result.request_id} in {result.environment} worker {result.worker_pid}"
        if line["start"] != result.start_type_truth:
            problems.append(
                f"{where}: probe said {line['start']}, truth is {result.start_type_truth}"
            )
        probe_env = line["environment_id"]
        if pid_of_probe_env.get(probe_env) != result.worker_pid:
            problems.append(
                f"{where}: probe environment {probe_env} is worker "
                f"{pid_of_probe_env.get(probe_env)}'s"
            )
        if result.worker_pid is not None:
            known = probe_env_of.setdefault(result.worker_pid, probe_env)
            if known != probe_env:
                problems.append(f"worker {result.worker_pid}: two probe environment ids")
    if len(set(probe_env_of.values())) != len(probe_env_of):
        problems.append("two workers share a probe environment id")
    return problems
