#!/usr/bin/env python3
"""INIT as Lambda measures it (the REPORT line's ``Init Duration``), in the local Lambda.

What it measures
    A trivial function, each run a fresh environment of the local Lambda (a real
    ``awslambdaric`` runtime process), three ways:
      bare        the handler module alone;
      decorator   the same module with ``from lifecycle_probe import probe`` and ``@probe``;
      zero-code   the bare module behind the probe's zero-code entry
                  (``_HANDLER=lifecycle_probe.handler.handler``, as the layer's wrapper sets);
    with the exporter given (``--exporter``, default ``emf``, the probe's default). INIT is
    the local Lambda's figure, as Lambda's own: the runtime process's start to its first
    request for an event, so it holds all the probe does at INIT, the internal extension's
    registration and its Telemetry API subscription included. ``import_cost.py`` times the
    import alone, outside any runtime.

    With ``--other-tree PATH`` the probe's two cases run a second time with the checkout at
    PATH (its ``src`` first on ``PYTHONPATH``), interleaved with this one's: a before/after
    comparison from one run, also given as the median and mean of the differences taken
    within each round (a busy host moves whole rounds by milliseconds).

How
    The runtimes run without ``PYTHONDONTWRITEBYTECODE`` (Lambda imports from ``.pyc``
    files; with it set, every import here would compile its source again) and without any
    ``LIFECYCLE_PROBE_*`` variable but the exporter. One unmeasured run of every case
    first writes the ``.pyc`` files. Then ``--runs`` rounds, each case once per round in
    an order rotated from round to round; medians and p90, and the milliseconds each case
    adds to the bare one. No target: a benchmark, not a test; it always exits 0. Run it on
    an idle machine: a process start moves by milliseconds under load.

    .venv/bin/python benchmarks/init_in_runtime.py [--runs 15] [--exporter emf]
        [--other-tree PATH] [--env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

BARE = "def handler(event, context):\n    return {'ok': True}\n"
PROBED = (
    "from lifecycle_probe import probe\n\n\n"
    "@probe\ndef handler(event, context):\n    return {'ok': True}\n"
)


def init_ms(handler: str, code_dir: Path, env: dict[str, str]) -> float | None:
    """Lambda's INIT figure of one fresh environment serving one request (None: it failed)."""
    from lifecycle_probe.emulator import FunctionConfig, LocalLambda

    with LocalLambda(FunctionConfig(handler, code_dir, env=env, timeout_s=10.0)) as emulator:
        result = emulator.invoke({})
    return result.init_duration_ms if result.outcome == "ok" else None


def cases(
    exporter: str, extra: dict[str, str], other: Path | None
) -> dict[str, tuple[str, dict[str, str]]]:
    """label -> (handler, the function's variables)."""
    probe_env = {"LIFECYCLE_PROBE_EXPORTER": exporter, **extra}
    zero_env = {**probe_env, "LIFECYCLE_PROBE_HANDLER": "bare_fn.handler"}
    found = {
        "bare": ("bare_fn.handler", {}),
        "decorator": ("probed_fn.handler", probe_env),
        "zero-code": ("lifecycle_probe.handler.handler", zero_env),
    }
    if other is not None:
        path = {"PYTHONPATH": str(other / "src")}
        found["decorator (other tree)"] = ("probed_fn.handler", {**probe_env, **path})
        found["zero-code (other tree)"] = ("lifecycle_probe.handler.handler", {**zero_env, **path})
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="rounds, each case once (15)")
    parser.add_argument("--exporter", default="emf", help="LIFECYCLE_PROBE_EXPORTER (emf)")
    parser.add_argument("--other-tree", type=Path, help="a second checkout to compare with")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable of the probe's cases, e.g. LIFECYCLE_PROBE_TELEMETRY_API=off",
    )
    args = parser.parse_args(argv)
    extra = dict(item.partition("=")[::2] for item in args.env)
    for name in [n for n in os.environ if n.startswith("LIFECYCLE_PROBE_")]:
        del os.environ[name]
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # inherited by the runtimes
    with tempfile.TemporaryDirectory(prefix="init-in-runtime-") as tmp:
        code_dir = Path(tmp)
        (code_dir / "bare_fn.py").write_text(BARE)
        (code_dir / "probed_fn.py").write_text(PROBED)
        measured = cases(args.exporter, extra, args.other_tree)
        times: dict[str, list[float]] = {label: [] for label in measured}
        # Per round, now - before for each probe case (--other-tree): the host's drift
        # between rounds cancels out of a difference taken within one round.
        paired: dict[str, list[float]] = {"decorator": [], "zero-code": []}
        failed: dict[str, int] = dict.fromkeys(measured, 0)
        labels = list(measured)
        for label in labels:  # the .pyc files, unmeasured
            init_ms(measured[label][0], code_dir, measured[label][1])
        for round_number in range(max(1, args.runs)):
            shift = round_number % len(labels)
            this_round: dict[str, float] = {}
            for label in labels[shift:] + labels[:shift]:
                handler, env = measured[label]
                value = init_ms(handler, code_dir, env)
                if value is None:
                    failed[label] += 1
                else:
                    times[label].append(value)
                    this_round[label] = value
            for label, differences in paired.items():
                other = this_round.get(f"{label} (other tree)")
                if other is not None and label in this_round:
                    differences.append(this_round[label] - other)
    shown = "".join(f", {name}={value}" for name, value in extra.items())
    print(f"Python {sys.version.split()[0]}, exporter {args.exporter}{shown}, {args.runs} rounds")
    print(f"{'case':<26} {'median ms':>10} {'p90 ms':>8} {'added ms':>9}  runs")
    bare = statistics.median(times["bare"]) if times["bare"] else None
    for label in labels:
        values = sorted(times[label])
        if not values:
            print(f"{label:<26} not measured ({failed[label]} failed)")
            continue
        median = statistics.median(values)
        p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
        added = "" if label == "bare" or bare is None else f"{median - bare:+9.2f}"
        print(f"{label:<26} {median:10.2f} {p90:8.2f} {added:>9}  {len(values)}")
    for label, differences in paired.items():
        if differences:
            print(
                f"{label}: now - before, paired within each round: median "
                f"{statistics.median(differences):+.2f} ms, mean "
                f"{statistics.mean(differences):+.2f} ms ({len(differences)} rounds)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
