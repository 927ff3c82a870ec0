"""Advice from what the probe saw: each item names its evidence and the expected gain.

A rule gives nothing unless the records hold its evidence (thresholds below); the rules
read only the summary, never a payload.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lifecycle_probe.report.summary import StaleGroup, Summary

__all__ = ["Advice", "advise"]

# An import is worth deferring when its own time (p50 over environments) is at least this
# long, or this share of INIT's p50 and at least DEFER_FLOOR_S ...
DEFER_MIN_S = 0.05
DEFER_SHARE = 0.10
DEFER_FLOOR_S = 0.01
DEFER_MAX_ITEMS = 3
# ... and it was seen in at least this many environments (or in every one, if fewer).
DEFER_MIN_ENVIRONMENTS = 2
# Provisioned concurrency is discussed from this many on-demand cold starts, and sized to
# remove this share of them.
PROVISIONED_MIN_COLD_STARTS = 3
PROVISIONED_TARGET_SHARE = 0.9
# Client libraries whose import inside the handler means a client made there.
CLIENT_PACKAGES = frozenset(
    {
        "boto3",
        "botocore",
        "aiobotocore",
        "psycopg2",
        "psycopg",
        "pymysql",
        "mysql",
        "redis",
        "urllib3",
        "requests",
        "httpx",
        "pymongo",
        "sqlalchemy",
        "elasticsearch",
        "opensearchpy",
    }
)
_SETTINGS = {
    "postgresql": "PostgreSQL: lower the client's TCP keepalives (keepalives_idle) below the "
    "cut-off, or check the connection after a freeze with "
    "lifecycle_probe.connections.reusable(conn); the cut-off is the server's "
    "idle_session_timeout or the proxy's (RDS Proxy IdleClientTimeout, a NAT's 350 s)",
    "mysql": "MySQL/MariaDB: the cut-off is the server's wait_timeout (or a proxy's); call "
    "conn.ping(reconnect=True) before use after a freeze, or "
    "lifecycle_probe.connections.reusable(conn)",
    "redis": "Redis: set health_check_interval on the client below the cut-off (the "
    "server's timeout setting or a proxy's)",
}
_HTTP_SETTING = (
    "HTTP keep-alive: the cut-off is the server's or load balancer's idle timeout; let the "
    "pool retry on a dropped connection (urllib3 Retry, botocore's retries are on by "
    "default) or lower its keep-alive below the cut-off"
)


@dataclass(frozen=True)
class Advice:
    """One piece of advice."""

    rule: str
    title: str
    evidence: str
    expected_gain: str
    action: str

    def to_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "title": self.title,
            "evidence": self.evidence,
            "expected_gain": self.expected_gain,
            "action": self.action,
        }


def advise(summary: Summary) -> list[Advice]:
    """Every rule's advice, most valuable kinds first."""
    items: list[Advice] = []
    items += stale_connection_advice(summary)
    items += leak_advice(summary)
    items += snapstart_advice(summary)
    items += provisioned_advice(summary)
    items += defer_import_advice(summary)
    items += client_in_handler_advice(summary)
    return items


def _n(count: int, noun: str) -> str:
    """``1 environment``, ``2 environments``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _ms(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def defer_import_advice(summary: Summary) -> list[Advice]:
    """Imports that cost INIT much, in several environments."""
    durations = summary.init_durations()
    init_p50 = durations.percentile(50)
    if init_p50 is None:
        return []
    with_imports = {e for per in summary.module_self_s.values() for e in per}
    needed = min(DEFER_MIN_ENVIRONMENTS, len(with_imports))
    cold_inits = sum(
        1 for s in summary.environments.values() if s.first_start in ("cold", None) and s.init
    )
    items = []
    # The function's own imports advised already: one item each, for its slowest module.
    advised: set[str] = set()
    for row in summary.slowest_imports(count=len(summary.module_self_s)):
        module, p50, environments = row["module"], row["p50_s"], row["environments"]
        origin = summary.module_origin.get(module)
        if origin == "runtime" or environments < max(1, needed):
            continue
        if not (p50 >= DEFER_MIN_S or (p50 >= DEFER_FLOOR_S and p50 >= DEFER_SHARE * init_p50)):
            continue
        # What the function can move: its own import that pulled this module in (a module
        # deep in a library's tree, a C extension, is nothing it imports itself).
        imported_by = (
            module if origin == "function" else summary.module_imported_by.get(module) or module
        )
        if imported_by in advised:
            continue
        advised.add(imported_by)
        pulled_in = f" (imported by {imported_by})" if imported_by != module else ""
        lazy = summary.after_init_imports.get(module)
        used = (
            f"the handler also imported it during invocations in {_n(len(lazy), 'environment')}"
            if lazy
            else "whether the first invocations use it is not visible to the probe "
            "(it sees imports, not calls)"
        )
        if origin == "function":
            action = (
                f"move the work {module} does at import (its top-level code) into the "
                "first call that needs it, or cache it lazily"
            )
        else:
            action = (
                f"import {imported_by} inside the code path that needs it, if some requests "
                "do not; or keep it and use SnapStart or provisioned concurrency"
            )
        items.append(
            Advice(
                "defer-import",
                f"Defer importing {imported_by}",
                f"{module}{pulled_in} took {_ms(p50)} by itself (p50) at INIT in "
                f"{_n(environments, 'environment')}, {p50 / init_p50:.0%} of INIT's p50 of "
                f"{_ms(init_p50)}; {used}",
                f"up to {_ms(p50)} off every INIT ({cold_inits} on-demand cold starts here "
                f"waited for INIT, about {_ms(p50 * cold_inits)} in all) if the requests that "
                "come first do not need it",
                action,
            )
        )
        if len(items) == DEFER_MAX_ITEMS:
            break
    return items


def client_in_handler_advice(summary: Summary) -> list[Advice]:
    """Client libraries imported inside the handler: their clients are made per request."""
    items = []
    for module, per_environment in sorted(summary.after_init_imports.items()):
        if module.split(".")[0] not in CLIENT_PACKAGES or "." in module:
            continue
        environments = len(per_environment)
        imports = sum(per_environment.values())
        items.append(
            Advice(
                "client-in-handler",
                f"Create the {module} client once, at INIT",
                f"{module} was first imported during an invocation (not at INIT) in "
                f"{_n(environments, 'environment')} ({_n(imports, 'import')}): its client or "
                "connection is made inside the handler",
                "each warm invocation skips making the client (a TCP and TLS handshake, "
                "tens of ms, and for boto3 the client's own set-up); the import moves to "
                "INIT, which the platform runs ahead of provisioned and proactive starts",
                f"import {module} and create the client at module level (outside the "
                "handler), and reuse it across invocations",
            )
        )
    return items


def _cut_off_text(group: StaleGroup) -> str:
    low = group.dead_idle.percentile(0)
    risk_max = group.risk_idle.maximum
    parts = []
    if low is not None:
        parts.append(f"connections idle {low:.1f} s or more were dead")
    if risk_max is not None:
        parts.append(f"one idle {risk_max:.1f} s still worked")
    return "; ".join(parts)


def stale_connection_advice(summary: Summary) -> list[Advice]:
    """Connections reused after the server's (or the network's) idle cut-off."""
    items = []
    for client, group in sorted(summary.stale.items()):
        failed = group.outcomes["failed"]
        detected = group.outcomes["detected"]
        risk = group.outcomes["risk"]
        if not (failed or detected or risk):
            continue
        setting = _SETTINGS.get(client, _HTTP_SETTING if ":" in client else None)
        if setting is None:
            setting = "check the client's keep-alive or reconnect setting against the cut-off"
        cut_off = _cut_off_text(group)
        evidence = (
            f"{failed} failed, {detected} detected (replaced before use) and {risk} risky "
            f"reuses of connections to {client} after a freeze, in "
            f"{_n(len(group.environments), 'environment')}" + (f"; {cut_off}" if cut_off else "")
        )
        if failed:
            gain = f"{_n(failed, 'request')} that failed on a dead connection would not have"
        elif detected:
            reconnect = group.reconnect_s.percentile(50)
            cost = f" (reconnecting took {_ms(reconnect)} p50)" if reconnect is not None else ""
            gain = f"{_n(detected, 'request')} paid for a dead connection{cost}; a health check "
            gain += "or a shorter keep-alive makes that cost predictable"
        else:
            gain = f"{risk} reuses after a long idle worked this time; past the cut-off they fail"
        items.append(
            Advice(
                "stale-connection",
                f"Connections to {client} are reused after the idle cut-off",
                evidence,
                gain,
                setting,
            )
        )
    return items


def _lifetimes(summary: Summary) -> list[tuple[int, int, str]]:
    rows = []
    for state in summary.environments.values():
        if state.first_ns is None or state.last_ns is None:
            continue
        start = state.first_ns
        if state.init is not None and state.init.start_ns is not None:
            start = min(start, state.init.start_ns)
        rows.append((start, state.last_ns, state.first_start or ""))
    return rows


def provisioned_sizing(summary: Summary) -> dict[str, Any] | None:
    """Observed concurrency and, per number of provisioned environments, cold starts removed.

    A cold start of an environment that began while ``k`` other environments were alive
    (between their first invocation, or INIT, and their last invocation) would have been
    served by a provisioned environment when ``k`` is below the number provisioned.
    """
    lifetimes = sorted(_lifetimes(summary))
    if not lifetimes:
        return None
    starts = [start for start, _, _ in lifetimes]
    alive_before = []
    for start, _, first in lifetimes:
        if first != "cold":
            continue
        others = 0
        # Environments that began before this one and were still alive when it began.
        for earlier_start, earlier_end, _ in lifetimes[: bisect.bisect_left(starts, start)]:
            if earlier_end >= start and earlier_start <= start:
                others += 1
        alive_before.append(others)
    points = sorted(
        [(s, 1) for s, _, _ in lifetimes] + [(e, -1) for _, e, _ in lifetimes],
        key=lambda p: (p[0], -p[1]),
    )
    peak = alive = 0
    for _, change in points:
        alive += change
        peak = max(peak, alive)
    cold = len(alive_before)
    removed = {n: sum(1 for k in alive_before if k < n) for n in range(1, peak + 1)}
    return {"peak_concurrency": peak, "cold_starts": cold, "removed": removed}


def provisioned_advice(summary: Summary) -> list[Advice]:
    """How many provisioned environments would have removed what share of cold starts."""
    sizing = provisioned_sizing(summary)
    if sizing is None or sizing["cold_starts"] < PROVISIONED_MIN_COLD_STARTS:
        return []
    cold, removed, peak = sizing["cold_starts"], sizing["removed"], sizing["peak_concurrency"]
    target = next(
        (n for n, count in sorted(removed.items()) if count >= PROVISIONED_TARGET_SHARE * cold),
        peak,
    )
    if removed.get(target, 0) == 0:
        return []
    init_p50 = summary.init_durations().percentile(50) or 0.0
    steps = ", ".join(
        f"{n}: {removed[n]}/{cold}" for n in sorted(removed) if n <= max(target, 1) + 2
    )
    ratio = summary.cold_start_ratio or 0.0
    return [
        Advice(
            "provisioned-concurrency",
            f"Provisioned concurrency of {target} would have removed "
            f"{removed[target] / cold:.0%} of cold starts",
            f"{cold} on-demand cold starts in {summary.invocations} invocations (cold-start "
            f"ratio {ratio:.1%}); at most {peak} environments were alive at once; cold "
            f"starts removed by N provisioned environments: {steps}",
            f"{removed[target]} cold starts fewer, about {_ms(init_p50)} (INIT p50) each, "
            f"{_ms(init_p50 * removed[target])} of waiting in all",
            f"set provisioned concurrency to {target} on the alias that takes the traffic "
            f"(billed for {target} environments all the time), or schedule it for the busy "
            "hours; SnapStart is the alternative when INIT is mostly imports",
        )
    ]


def leak_advice(summary: Summary) -> list[Advice]:
    """Module globals that kept a request's values (one item per global)."""
    return [
        Advice(
            "global-leak",
            f"Request state kept in {row['module']}.{row['name']}",
            f"{row['module']}.{row['name']} was rebound to a value from the event in "
            f"{_n(row['count'], 'invocation')} across {_n(row['environments'], 'environment')}"
            + (
                f", first at invocation {row['first_seen_seq']}"
                if row["first_seen_seq"] is not None
                else ""
            ),
            "a later request in the same environment no longer sees the previous "
            "request's data (a correctness and privacy fix, not a speed one)",
            f"keep {row['name']} a local of the handler (or pass it along); reset it at the "
            "start of each invocation if it must stay global",
        )
        for row in summary.global_leaks()
    ]


_HAZARD_ACTIONS = {
    "connection": "open it after restore: register a hook with "
    "snapshot_restore_py.register_after_restore that reconnects",
    "random": "re-seed or regenerate it after restore "
    "(snapshot_restore_py.register_after_restore): every restored environment has the same value",
    "unique-id": "make it after restore or per request: every restored environment shares it",
    "timestamp": "take the time after restore or per request: the snapshot's time is old",
    "credentials": "refresh them after restore: their expiry was computed at snapshot time",
}


def snapstart_advice(summary: Summary) -> list[Advice]:
    """State captured in a SnapStart snapshot that restored environments must not share."""
    items = []
    for (module, name, kind), hazard in sorted(summary.hazards.items()):
        items.append(
            Advice(
                "snapstart-hazard",
                f"SnapStart: {module}.{name} is shared by every restored environment",
                f"{module}.{name} ({kind}) was captured in the snapshot; reported in "
                f"{_n(len(hazard['environments']), 'restored environment')}",
                "restored environments stop sharing one value (duplicate ids, dead "
                "connections, stale credentials)",
                _HAZARD_ACTIONS.get(
                    kind, "recreate it in an after-restore hook (snapshot_restore_py)"
                ),
            )
        )
    return items
