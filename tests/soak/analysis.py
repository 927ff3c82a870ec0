"""The soak's figures: tag agreement, telemetry loss, added latency, memory growth.

Everything is computed from the local Lambda's ground truth (``InvocationResult``,
``EnvironmentInfo``), the probe's console lines in each environment's log, and what the
OTLP destinations hold (the soak's collector, the ``otlp-file``).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from lifecycle_probe.emulator import InvocationResult
from tests.integration.probe.support import invocation_lines
from tests.soak.otlp_tally import OtlpTally
from tests.soak.workload import RunRecord

START_TYPES = ("cold", "warm", "provisioned", "proactive", "restored")
# Handler exceptions that end the runtime process (the runtime clients catch Exception
# only): their duration includes the process's exit, not the probe's work.
EXITING = ("system_exit", "keyboard_interrupt")
MEMORY_MIN_INVOCATIONS = 20
MEMORY_WARMUP = 5


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1), nearest-rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(q * len(ordered) + 0.999999)))
    return ordered[rank - 1]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def results(run: RunRecord) -> list[tuple[str, InvocationResult]]:
    return [(name, r) for name, truth in run.truth.items() for r in truth]


def _env_infos(run: RunRecord) -> dict[tuple[str, str], Any]:
    return {(name, e.id): e for name, envs in run.environments.items() for e in envs}


def is_init_failure(result: InvocationResult) -> bool:
    return result.delivered_ns == 0


# -- tags ---------------------------------------------------------------------------------


def tag_agreement(run: RunRecord) -> dict[str, Any]:
    """Each request's console tag against the ground truth, per start type."""
    per: dict[str, Counter[str]] = defaultdict(Counter)
    problems: list[str] = []
    probe_env_of: dict[tuple[str, str], str] = {}
    timeouts: Counter[str] = Counter()
    for name, emulator in run.emulators.items():
        lines = invocation_lines(emulator)
        for result in run.truth[name]:
            if is_init_failure(result):
                continue
            truth = result.start_type_truth
            line = lines.get(result.request_id)
            if result.outcome == "timeout":
                timeouts["with record" if line else "without record"] += 1
                if line is None:
                    continue
            counts = per[truth]
            counts["requests"] += 1
            if line is None:
                counts["missing"] += 1
                problems.append(f"{name} {result.request_id} in {result.environment}: no record")
                continue
            if line["start"] == truth and line["emulator_environment"] == result.environment:
                counts["agree"] += 1
            else:
                counts["disagree"] += 1
                problems.append(
                    f"{name} {result.request_id} in {result.environment}: probe said "
                    f"{line['start']} in {line['emulator_environment']}, truth {truth}"
                )
            known = probe_env_of.setdefault((name, result.environment), line["environment_id"])
            if known != line["environment_id"]:
                problems.append(f"{name} {result.environment}: two probe environment ids")
    if len(set(probe_env_of.values())) != len(probe_env_of):
        problems.append("two emulator environments share a probe environment id")
    table: dict[str, dict[str, Any]] = {}
    for start in START_TYPES:
        counts = per.get(start, Counter())
        n = counts["requests"]
        table[start] = {
            "requests": n,
            "agree": counts["agree"],
            "disagree": counts["disagree"],
            "missing": counts["missing"],
            "agreement_pct": _round(100.0 * counts["agree"] / n, 3) if n else None,
        }
    total = sum(v["requests"] for v in table.values())
    agree = sum(v["agree"] for v in table.values())
    return {
        "per_start_type": table,
        "requests": total,
        "agree": agree,
        "agreement_pct": _round(100.0 * agree / total, 3) if total else None,
        "timeouts": dict(timeouts),
        "problems": problems,
    }


def otlp_tag_agreement(run: RunRecord, tally: OtlpTally) -> dict[str, Any]:
    """The ``lifecycle.start`` of every delivered invocation span against the truth."""
    agree = disagree = 0
    problems = []
    for name, result in results(run):
        got = tally.invocations.get(result.request_id)
        if got is None or is_init_failure(result):
            continue
        if got[1] == result.start_type_truth:
            agree += 1
        else:
            disagree += 1
            problems.append(
                f"{name} {result.request_id}: span says {got[1]}, truth {result.start_type_truth}"
            )
    return {
        "spans": agree + disagree,
        "agree": agree,
        "disagree": disagree,
        "problems": problems[:50],
    }


# -- loss ---------------------------------------------------------------------------------


def telemetry_loss(run: RunRecord, tally: OtlpTally, mode_at: Any = None) -> dict[str, Any]:
    """Every request accounted for in one OTLP destination: delivered, counted as dropped
    (per environment), or absent for a reason accepted; the rest is unaccounted."""
    infos = _env_infos(run)
    categories: Counter[str] = Counter()
    undelivered: dict[tuple[str, str], list[InvocationResult]] = defaultdict(list)
    served_in: Counter[tuple[str, str]] = Counter()
    timeouts_absent_in: Counter[tuple[str, str]] = Counter()
    init_failed_envs = set()
    for name, result in results(run):
        key = (name, result.environment)
        if is_init_failure(result):
            init_failed_envs.add(key)
            categories["init failure (no invocation: a failed lambda.init instead)"] += 1
            continue
        served_in[key] += 1
        if result.request_id in tally.invocations:
            categories["delivered"] += 1
        else:
            undelivered[key].append(result)
    unaccounted: list[dict[str, Any]] = []
    for key, missing in sorted(undelivered.items()):
        info = infos[key]
        dropped = tally.total("lifecycle.telemetry.dropped", info.log_stream, "spans")
        ordinary = [r for r in missing if r.outcome != "timeout"]
        timed_out = [r for r in missing if r.outcome == "timeout"]
        covered = min(dropped, len(ordinary))
        categories["counted as dropped (lifecycle.telemetry.dropped, spans)"] += covered
        dropped -= covered
        covered_timeouts = min(dropped, len(timed_out))
        categories["counted as dropped (lifecycle.telemetry.dropped, spans)"] += covered_timeouts
        absent_timeouts = len(timed_out) - covered_timeouts
        categories["absent: timed out, environment killed at the deadline"] += absent_timeouts
        timeouts_absent_in[key] = absent_timeouts
        for result in ordinary[covered:]:
            sent = run.sent.get(result.request_id)
            unaccounted.append(
                {
                    "function": key[0],
                    "request_id": result.request_id,
                    "environment": key[1],
                    "log_stream": info.log_stream,
                    "outcome": result.outcome,
                    "error_type": result.error_type,
                    "operation": sent.operation if sent else None,
                    "kind": sent.kind if sent else None,
                    "environment_end": info.end_reason,
                    "environment_invocations": info.invocations,
                    "last_of_environment": bool(info.request_ids)
                    and info.request_ids[-1] == result.request_id,
                    "collector_mode_at_request": sent.collector_mode if sent else None,
                    "collector_mode_at_environment_end": (
                        mode_at(info.ended_ns) if mode_at and info.ended_ns else None
                    ),
                }
            )
    categories["UNACCOUNTED"] = len(unaccounted)
    # failed INITs: their lambda.init span should be there
    init_exported = sum(
        1 for key in init_failed_envs if infos[key].log_stream in tally.init_failures
    )
    # metric points: faas.invocations per environment, or counted as dropped
    metric_unaccounted = 0
    metric_envs = []
    metric_by_end: Counter[str] = Counter()
    for key, served in served_in.items():
        info = infos[key]
        counted = tally.total("faas.invocations", info.log_stream)
        dropped = tally.total("lifecycle.telemetry.dropped", info.log_stream, "metrics")
        gap = served - timeouts_absent_in[key] - counted - dropped
        if gap > 0:
            metric_unaccounted += gap
            metric_by_end[info.end_reason or "alive"] += gap
            metric_envs.append(
                {
                    "environment": f"{key[0]}/{key[1]}",
                    "served": served,
                    "faas.invocations": counted,
                    "dropped": dropped,
                    "end": info.end_reason,
                }
            )
    causes = Counter(
        (
            u["outcome"] if u["kind"] not in EXITING else f"runtime exit ({u['kind']})",
            u["environment_end"],
            u["collector_mode_at_request"],
            u["collector_mode_at_environment_end"],
        )
        for u in unaccounted
    )
    return {
        "requests": sum(categories.values()) - categories["UNACCOUNTED"],
        "categories": dict(categories),
        "unaccounted": unaccounted,
        "unaccounted_causes": [
            {
                "outcome": o,
                "environment_end": e,
                "collector_mode_at_request": m,
                "collector_mode_at_environment_end": me,
                "count": c,
            }
            for (o, e, m, me), c in causes.most_common()
        ],
        "init_failures": len(init_failed_envs),
        "init_failures_exported": init_exported,
        "dropped_by_reason": tally.dropped_by_reason(),
        "metrics_unaccounted_invocations": metric_unaccounted,
        "metrics_unaccounted_by_environment_end": dict(metric_by_end),
        "metrics_unaccounted_environments": metric_envs[:50],
        "bad_lines": tally.bad_requests,
    }


# -- latency ------------------------------------------------------------------------------


def _latency_samples(run: RunRecord, max_number: int | None) -> dict[str, dict[str, list[float]]]:
    """Per start type: handler-excess duration (ms), time from response to freeze (ms),
    INIT duration (ms)."""
    found: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _, result in results(run):
        sent = run.sent.get(result.request_id)
        if sent is None or is_init_failure(result) or result.outcome == "timeout":
            continue
        if sent.kind in EXITING:
            continue
        if max_number is not None and sent.number > max_number:
            continue
        start = result.start_type_truth
        for group in (start, "all"):
            found[group]["duration"].append(result.duration_ms - sent.sleep_s * 1000)
            if sent.returned_ns:
                found[group]["settle"].append((sent.returned_ns - result.end_ns) / 1e6)
            if result.init_duration_ms is not None:
                found[group]["init"].append(result.init_duration_ms)
    return found


def added_latency(probed: RunRecord, baseline: RunRecord | None) -> dict[str, Any]:
    """p50/p99 of the invocation duration (less the handler's own sleep) with the probe,
    without it (the bare twin, same seed, same events), and the deltas, per start type;
    the same for the time from the response to the freeze and for INIT."""
    if baseline is None:
        window = None
    else:
        numbers = [s.number for s in baseline.sent.values()]
        window = max(numbers) if numbers else 0
    with_probe = _latency_samples(probed, window)
    without = _latency_samples(baseline, None) if baseline is not None else {}
    table: dict[str, Any] = {}
    for group in ("all", *START_TYPES):
        row: dict[str, Any] = {}
        for measure in ("duration", "settle", "init"):
            a = with_probe.get(group, {}).get(measure, [])
            b = without.get(group, {}).get(measure, []) if without else []
            if not a:
                continue
            entry: dict[str, Any] = {"n_probe": len(a), "n_bare": len(b)}
            for q, label in ((0.5, "p50"), (0.99, "p99")):
                pa, pb = percentile(a, q), percentile(b, q)
                entry[f"{label}_probe_ms"] = _round(pa)
                entry[f"{label}_bare_ms"] = _round(pb)
                entry[f"{label}_delta_ms"] = (
                    _round(pa - pb) if pa is not None and pb is not None else None
                )
            row[measure] = entry
        if row:
            table[group] = row
    paired = _paired(probed, baseline) if baseline is not None else None
    full = _latency_samples(probed, None)["all"]["duration"]
    return {
        "window_events": window,
        "per_start_type": table,
        "paired_duration_delta_ms": paired,
        "probe_full_run_duration_ms": {
            "n": len(full),
            "p50": _round(percentile(full, 0.5)),
            "p99": _round(percentile(full, 0.99)),
        },
    }


def _paired(probed: RunRecord, baseline: RunRecord) -> dict[str, Any]:
    def by_number(run: RunRecord) -> dict[int, tuple[str, float]]:
        found = {}
        for _, result in results(run):
            sent = run.sent.get(result.request_id)
            if (
                sent is None
                or is_init_failure(result)
                or result.outcome == "timeout"
                or sent.kind in EXITING
            ):
                continue
            found[sent.number] = (result.start_type_truth, result.duration_ms)
        return found

    a, b = by_number(probed), by_number(baseline)
    deltas = [a[n][1] - b[n][1] for n in a.keys() & b.keys()]
    warm = [a[n][1] - b[n][1] for n in a.keys() & b.keys() if a[n][0] == b[n][0] == "warm"]
    return {
        "pairs": len(deltas),
        "p50": _round(percentile(deltas, 0.5)),
        "p99": _round(percentile(deltas, 0.99)),
        "warm_pairs": len(warm),
        "warm_p50": _round(percentile(warm, 0.5)),
        "warm_p99": _round(percentile(warm, 0.99)),
    }


# -- memory -------------------------------------------------------------------------------


def _slope(points: list[tuple[int, int]]) -> float:
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def memory_growth(run: RunRecord) -> dict[str, Any]:
    """Per environment with at least 20 invocations: VmRSS growth in kB per invocation,
    the least-squares slope after the first 5 (warm-up: the SDK's import at the first
    flush), and (last - 5th) / invocations between; p50 and max over environments."""
    slopes: list[float] = []
    spans: list[float] = []
    worst: list[tuple[float, str, int, int, int]] = []
    first_rss: list[int] = []
    for function, envs in run.rss.items():
        for env_id, samples in envs.items():
            if samples:
                first_rss.append(samples[0][1])
            if len(samples) < MEMORY_MIN_INVOCATIONS:
                continue
            after = [s for s in samples if s[0] >= MEMORY_WARMUP]
            if len(after) < 2:
                continue
            slope = _slope(after)
            slopes.append(slope)
            growth = (after[-1][1] - after[0][1]) / max(1, after[-1][0] - after[0][0])
            spans.append(growth)
            worst.append((slope, f"{function}/{env_id}", len(samples), after[0][1], after[-1][1]))
    worst.sort(reverse=True)
    return {
        "environments": len(slopes),
        "slope_kb_per_invocation_p50": _round(percentile(slopes, 0.5)),
        "slope_kb_per_invocation_max": _round(max(slopes) if slopes else None),
        "last_minus_5th_kb_per_invocation_p50": _round(percentile(spans, 0.5)),
        "last_minus_5th_kb_per_invocation_max": _round(max(spans) if spans else None),
        "max_invocations_in_one_environment": max(
            (len(s) for envs in run.rss.values() for s in envs.values()), default=0
        ),
        "rss_after_first_invocation_kb_p50": percentile([float(v) for v in first_rss], 0.5),
        "steepest": [
            {
                "environment": e,
                "invocations": n,
                "rss_5th_kb": a,
                "rss_last_kb": b,
                "slope_kb_per_invocation": round(s, 3),
            }
            for s, e, n, a, b in worst[:5]
        ],
    }


# -- the run ------------------------------------------------------------------------------


def run_facts(run: RunRecord) -> dict[str, Any]:
    rs = results(run)
    envs = [e for envs in run.environments.values() for e in envs]
    return {
        "probed": run.probed,
        "seed": run.seed,
        "elapsed_s": round(run.elapsed_s, 1),
        "stopped_early": run.stopped_early,
        "requests": len(rs),
        "requests_per_function": {name: len(t) for name, t in run.truth.items()},
        "environments": len(envs),
        "environments_by_init_type": dict(Counter(e.init_type for e in envs)),
        "environments_by_end": dict(Counter(e.end_reason or "alive" for e in envs)),
        "operations": dict(sorted(run.operations.items())),
        "outcomes": dict(Counter(r.outcome for _, r in rs)),
        "error_types": dict(Counter(r.error_type for _, r in rs if r.error_type)),
        "start_types_truth": dict(
            Counter(r.start_type_truth for _, r in rs if not is_init_failure(r))
        ),
        "init_failures": sum(1 for _, r in rs if is_init_failure(r)),
        "init_failure_tokens": run.init_failure_tokens,
        "operation_errors": run.operation_errors[:50],
    }
