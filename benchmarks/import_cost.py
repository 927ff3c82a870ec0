#!/usr/bin/env python3
"""Whole-process cost of ``import lifecycle_probe; lifecycle_probe.install()``.

What it measures
    The wall time of a fresh interpreter that runs ``import lifecycle_probe;
    lifecycle_probe.install()``, against a bare interpreter (``-c "pass"``) in the same
    run. The difference is what the probe adds to a Lambda INIT. For context it also
    times ``from lifecycle_probe import probe`` (the decorator case), ``@probe`` with the
    ``emf`` exporter (``probe(exporter="emf")(handler)``: what a user's INIT runs with the
    default exporter) and, when they can be imported, the peers ``wrapt``,
    ``opentelemetry.sdk.trace`` and ``aws_lambda_powertools``.

How
    Every command is a child ``sys.executable -c CODE``. The children run with
    ``PYTHONDONTWRITEBYTECODE`` removed from their environment (with it set, every import
    recompiles its source, which Lambda never does) and with ``LIFECYCLE_PROBE_DISABLED``
    removed; no other ``LIFECYCLE_PROBE_*`` variable is set. ``PYTHONPATH`` is this
    checkout's ``src`` and nothing else, so the children import this tree even where the
    shell had another ``PYTHONPATH`` (an editable install's ``.pth`` file comes after it
    on ``sys.path``); the file each tree's ``lifecycle_probe`` is imported from is printed
    at the start, and the run stops if it is not that tree's. Each command first runs
    three times unmeasured so that the ``.pyc`` files exist, as they do in a deployed
    function. Then the commands run ``--runs`` times each, interleaved (one round runs
    every command once, the order rotated from round to round), and the median and p90
    wall time of each are reported with the milliseconds added to, and the ratio to, the
    bare interpreter.

    A separate pass runs the probe's commands under ``-X importtime`` and lists the
    modules they import beyond the bare interpreter (median over ``--importtime-runs``
    passes), so that a reader sees what costs.

The target (issue 15) is at most 3 ms added by import + install; the verdict is printed
as PASS or MISS, and the script always exits 0: a benchmark is not a test. Run it on an
otherwise idle machine: under load, the medians of both the bare interpreter and the
probe's case move by more than the probe costs.

Before and after, in one run
    With ``--other-tree PATH`` (a checkout's root, or its ``src`` directory) each of the
    probe's cases also runs with ``PYTHONPATH`` set to that checkout's ``src``; the rows
    are labelled ``(this tree)`` and ``(other tree)``. Both trees' commands go through the
    same interleaved rounds, so that a drift of the machine hits both alike, and a line
    per case gives the milliseconds added before (the other tree) and now (this one).
    The other tree's ``.pyc`` files are written by the same warm-up runs.

Instructions
    With ``--instructions PASSES`` it also counts the instructions each of the probe's
    cases executes, under valgrind's callgrind with the hash seed fixed (the median of
    PASSES runs): a count that does not move with the machine's load, so a change of a
    few microseconds at INIT shows where the wall times above spread by a tenth of a
    millisecond from run to run. Three baselines:

    - the bare interpreter;
    - in the runtime: every case's code is preceded by ``import awslambdaric.bootstrap,
      awslambdaric.__main__``, what AWS's runtime interface client has imported before
      it imports a handler, and the count added is against that import alone (skipped
      when ``awslambdaric`` cannot be imported);
    - a handler module that imports boto3, in the runtime: ``@probe`` with the ``emf``
      exporter beside ``import boto3``, against ``import boto3`` alone (skipped when
      ``boto3`` cannot be imported).

    And per module the function imports at INIT: 200 empty modules imported after
    ``install()`` in the runtime, against the same imports without the probe (what the
    import hook and the tracer add to each import, the module's own cost taken out).

    With ``--other-tree`` every case is counted in both trees, with the counts before,
    now and their difference; each tree's baselines are counted in that tree (an editable
    install of this checkout leaves one more ``sys.path`` entry in the other tree's
    children, which costs each import that searches the whole path: the runtime client's
    baseline is ~0.1 M higher there). The count holds the tree's path strings (``sys.path``,
    every module's ``__file__``, the ``.pyc`` paths): compare trees checked out at paths
    of equal length, e.g. ``/work/main/src`` and ``/tmp/ic_ol/src``; a warning is printed
    when they differ. Every command counted has run once unmeasured before, in each tree,
    so that the counts are of imports from ``.pyc`` files. Valgrind runs each command
    once per pass and per tree, nothing more: a few seconds each, some twenty for the
    boto3 case.

Run it with the project's interpreter::

    .venv/bin/python benchmarks/import_cost.py [--runs 40] [--importtime-runs 5] [--instructions 3]
    .venv/bin/python benchmarks/import_cost.py --other-tree /tmp/before --instructions 1

A before tree, at a path as long as this checkout's ``src`` (for the instruction counts)::

    mkdir -p /tmp/ic_ol && git archive COMMIT src | tar -x -C /tmp/ic_ol
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

TARGET_ADDED_MS = 3.0
# The case the target is about.
TARGET_LABEL = "import + install()"
WARMUP_RUNS = 3
# How --instructions runs a child: callgrind counts every instruction, writes no file.
CALLGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
# Modules whose cumulative import time is at least this are flagged in the listing.
FLAG_US = 500
# This checkout's src: the children import it through PYTHONPATH, not through whatever the
# interpreter would find first, so that both trees are reached the same way.
THIS_SRC = Path(os.path.abspath(__file__)).parent.parent / "src"
# The probe's cases: label, code. Measured in each tree compared.
PROBE_CASES = (
    (TARGET_LABEL, "import lifecycle_probe; lifecycle_probe.install()"),
    ("from lifecycle_probe import probe", "from lifecycle_probe import probe"),
    (
        "@probe, emf exporter",
        'from lifecycle_probe import probe\nprobe(exporter="emf")(lambda event, context: None)',
    ),
)
# What AWS's runtime interface client has imported when it imports the handler's module.
RUNTIME_PREFIX = "import awslambdaric.bootstrap, awslambdaric.__main__\n"
# A realistic handler module, for the instruction counts only, against its own baseline.
BOTO3_BASELINE = "import boto3"
BOTO3_CASE = (
    "@probe emf, handler importing boto3",
    "from lifecycle_probe import probe\nimport boto3\n"
    'probe(exporter="emf")(lambda event, context: None)',
)
# What the probe adds to each module the function imports at INIT (the import hook, and
# the tracer's record of it): this many empty modules imported after ``install()`` in the
# runtime, against the same imports without the probe.
PER_IMPORT_MODULES = 200
# Wide enough for the longest label with its tree, so that the columns line up.
LABEL_WIDTH = max(len(label) for label, _ in (*PROBE_CASES, BOTO3_CASE)) + len(" (other tree)")


@dataclass
class Tree:
    """A checkout the children import ``lifecycle_probe`` from, and their environment."""

    name: str  # "this" or "other"
    src: Path
    env: dict[str, str]


@dataclass
class Case:
    """One child command, the environment it runs in and the wall times measured for it."""

    label: str
    code: str
    required: bool
    env: dict[str, str] = field(default_factory=dict)
    tree: str = ""  # "this" or "other" when two trees are compared
    times_s: list[float] = field(default_factory=list)
    available: bool = True
    failure: str = ""

    @property
    def title(self) -> str:
        """The label, with the tree when two trees are compared."""
        return f"{self.label} ({self.tree} tree)" if self.tree else self.label


@dataclass
class ImportLine:
    """One line of ``-X importtime`` output."""

    name: str
    depth: int
    self_us: int
    cumulative_us: int


def child_environment() -> dict[str, str]:
    """This process's environment without the variables that would distort the children."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # Lambda imports from .pyc files
    env.pop("PYTHONPROFILEIMPORTTIME", None)  # same as -X importtime: only where asked
    env.pop("LIFECYCLE_PROBE_DISABLED", None)  # a disabled probe would measure nothing
    return env


def resolve_tree(text: str) -> Path:
    """The directory holding ``lifecycle_probe`` in the checkout at ``text``: its ``src``,
    or ``text`` itself when it is the ``src`` directory (an argparse type: a path without
    the package is refused with exit status 2)."""
    # abspath, not resolve(): the children see the path as spelled, and its length is
    # what the instruction counts depend on.
    root = Path(os.path.abspath(os.path.expanduser(text)))
    for candidate in (root / "src", root):
        if (candidate / "lifecycle_probe").is_dir():
            return candidate
    raise argparse.ArgumentTypeError(
        f"{text}: neither {text}/src/lifecycle_probe nor {text}/lifecycle_probe exists"
    )


def tree_environment(env: dict[str, str], src: Path) -> dict[str, str]:
    """``env`` with ``src`` as the whole ``PYTHONPATH``: an inherited entry could shadow it."""
    return {**env, "PYTHONPATH": str(src)}


def make_trees(env: dict[str, str], other_src: Path | None) -> list[Tree]:
    """This tree, and the other one when one is given."""
    trees = [Tree("this", THIS_SRC, tree_environment(env, THIS_SRC))]
    if other_src is not None:
        trees.append(Tree("other", other_src, tree_environment(env, other_src)))
    return trees


def make_cases(trees: list[Tree]) -> list[Case]:
    """The bare interpreter, the probe's ways in (in each tree), and the peers.

    The bare interpreter and the peers run with this tree's ``PYTHONPATH``: the entry
    costs a look-up per import, which the probe's cases pay too.
    """
    this = trees[0]
    compared = len(trees) > 1
    cases = [Case("bare interpreter", "pass", True, this.env)]
    for label, code in PROBE_CASES:
        for tree in trees:
            cases.append(Case(label, code, True, tree.env, tree.name if compared else ""))
    cases += [
        Case("peer: import wrapt", "import wrapt", False, this.env),
        Case(
            "peer: import opentelemetry.sdk.trace",
            "import opentelemetry.sdk.trace",
            False,
            this.env,
        ),
        Case("peer: import aws_lambda_powertools", "import aws_lambda_powertools", False, this.env),
    ]
    return cases


def run_child(code: str, env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``sys.executable [options] -c code`` and capture its output."""
    return subprocess.run(
        [sys.executable, *options, "-c", code],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def failure_of(result: subprocess.CompletedProcess[str]) -> str:
    """The last line a failed child wrote (its exception, as a rule), or its exit status."""
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def check_trees(trees: list[Tree]) -> bool:
    """Print the file each tree's children import ``lifecycle_probe`` from; False (and
    why) when it is not in that tree, so that nothing is measured of the wrong tree."""
    for tree in trees:
        result = run_child("import lifecycle_probe; print(lifecycle_probe.__file__)", tree.env)
        if result.returncode != 0:
            print(f"cannot import lifecycle_probe from {tree.src}: {failure_of(result)}")
            return False
        location = result.stdout.strip()
        print(f"lifecycle_probe ({tree.name} tree): {location}")
        # The current directory comes before PYTHONPATH in a -c child's sys.path.
        if not Path(location).is_relative_to(tree.src):
            print(f"  not under {tree.src}: something ahead of PYTHONPATH shadows the tree")
            return False
    return True


def time_child(code: str, env: dict[str, str]) -> tuple[float, int]:
    """Wall time in seconds of one ``sys.executable -c code``, and its exit status."""
    command = [sys.executable, "-c", code]
    start = time.perf_counter()
    status = subprocess.call(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start, status


def warm_up(cases: list[Case]) -> None:
    """Run each command a few times unmeasured (writes .pyc files, in each tree); drop the
    commands that fail."""
    for case in cases:
        for _ in range(WARMUP_RUNS):
            result = run_child(case.code, case.env)
            if result.returncode != 0:
                case.available = False
                case.failure = failure_of(result)
                break


def measure(cases: list[Case], runs: int) -> None:
    """Run every available command ``runs`` times, interleaved, rotating the order."""
    active = [case for case in cases if case.available]
    for round_number in range(runs):
        shift = round_number % len(active)
        for case in active[shift:] + active[:shift]:
            elapsed, status = time_child(case.code, case.env)
            if status == 0:
                case.times_s.append(elapsed)


def percentile(values: list[float], fraction: float) -> float:
    """Linear-interpolated percentile of ``values`` (``fraction`` in [0, 1])."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def parse_importtime(stderr: str) -> list[ImportLine]:
    """The lines of ``-X importtime`` output, in the order the interpreter printed them."""
    lines: list[ImportLine] = []
    for raw in stderr.splitlines():
        if not raw.startswith("import time:"):
            continue
        parts = raw[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        name_field = parts[2].rstrip()
        name = name_field.lstrip()
        depth = (len(name_field) - len(name) - 1) // 2
        lines.append(ImportLine(name, depth, int(parts[0]), int(parts[1])))
    return lines


def loaded_modules(code: str, env: dict[str, str]) -> set[str]:
    """Names in ``sys.modules`` once ``code`` has run in a fresh interpreter."""
    listing = code + "\nimport sys\nprint('\\n'.join(sys.modules))"
    result = run_child(listing, env)
    return set(result.stdout.split())


def importtime_listing(
    code: str, env: dict[str, str], passes: int
) -> tuple[list[ImportLine], bool]:
    """Median ``-X importtime`` lines of ``code`` over ``passes`` runs; False if it failed."""
    samples: list[list[ImportLine]] = []
    for _ in range(passes):
        result = run_child(code, env, "-X", "importtime")
        if result.returncode != 0:
            return [], False
        samples.append(parse_importtime(result.stderr))
    first = samples[0]
    merged: list[ImportLine] = []
    for line in first:
        self_us = [s.self_us for sample in samples for s in sample if s.name == line.name]
        cumulative = [s.cumulative_us for sample in samples for s in sample if s.name == line.name]
        merged.append(
            ImportLine(
                line.name,
                line.depth,
                int(statistics.median(self_us)),
                int(statistics.median(cumulative)),
            )
        )
    return merged, True


def added_ms(case: Case | None, bare_median_ms: float) -> float | None:
    """Median milliseconds ``case`` adds to the bare interpreter, None if not measured."""
    if case is None or not case.available or not case.times_s:
        return None
    return statistics.median(case.times_s) * 1e3 - bare_median_ms


def find_case(cases: list[Case], label: str, tree: str) -> Case | None:
    """The case of ``label`` in ``tree`` ("this" also finds the case of a single tree)."""
    for case in cases:
        if case.label == label and (case.tree == tree or (tree == "this" and not case.tree)):
            return case
    return None


def print_timing(cases: list[Case], runs: int) -> None:
    """The wall-time table, the before/now lines and the verdict against the target."""
    bare = cases[0]
    bare_median = statistics.median(bare.times_s) * 1e3
    print()
    print(f"Wall time of a whole child process, {runs} interleaved runs each (ms)")
    header = (
        f"{'case':<{LABEL_WIDTH}} {'median':>8} {'p90':>8} {'added':>8} {'ratio':>7}  {'runs':>4}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        if not case.available:
            print(f"{case.title:<{LABEL_WIDTH}} not measured: {case.failure}")
            continue
        if not case.times_s:
            print(f"{case.title:<{LABEL_WIDTH}} not measured: every run failed")
            continue
        median = statistics.median(case.times_s) * 1e3
        p90 = percentile(case.times_s, 0.9) * 1e3
        added = "" if case is bare else f"{median - bare_median:+8.2f}"
        ratio = median / bare_median
        print(
            f"{case.title:<{LABEL_WIDTH}} {median:8.2f} {p90:8.2f} {added:>8} {ratio:6.2f}x"
            f"  {len(case.times_s):>4}"
        )
    print()
    print("added = median of the case - median of the bare interpreter; ratio = median / bare")
    if any(case.tree == "other" for case in cases):
        print("added before (other tree) -> now (this tree), same rounds:")
        for label, _ in PROBE_CASES:
            before = added_ms(find_case(cases, label, "other"), bare_median)
            now = added_ms(find_case(cases, label, "this"), bare_median)
            if before is None or now is None:
                print(f"  {label:<34} not measured in both trees")
                continue
            print(
                f"  {label:<34} before -> now: {before:+.2f} ms -> {now:+.2f} ms"
                f"  ({now - before:+.2f} ms)"
            )
    target = find_case(cases, TARGET_LABEL, "this")
    target_ms = added_ms(target, bare_median)
    if target_ms is not None:
        verdict = "PASS" if target_ms <= TARGET_ADDED_MS else "MISS"
        print(
            f"{TARGET_LABEL} adds {target_ms:.2f} ms (median) against a target of "
            f"<= {TARGET_ADDED_MS:.0f} ms: {verdict}"
        )
    else:
        failure = target.failure if target is not None else ""
        print(f"{TARGET_LABEL} could not be measured: {failure or 'no runs'}")


def print_importtime(cases: list[Case], passes: int) -> None:
    """What the probe's import pulls in beyond the bare interpreter, per -X importtime."""
    print()
    print(
        "Note: -X importtime adds overhead of its own to every module and does not time"
        " modules loaded through importlib.import_module, so its sums differ from the"
        " wall-time differences: the table above is the measurement, the listings below"
        " show where the time goes."
    )
    bare = cases[0]
    bare_lines, _ = importtime_listing(bare.code, bare.env, passes)
    bare_names = {line.name for line in bare_lines}
    bare_loaded = loaded_modules(bare.code, bare.env)
    for case in cases[1:]:
        if not case.available:
            continue
        lines, ok = importtime_listing(case.code, case.env, passes)
        if not ok:
            print(f"\n-X importtime failed for {case.title}")
            continue
        new = [line for line in lines if line.name not in bare_names]
        total_self = sum(line.self_us for line in new)
        untimed = sorted(
            name
            for name in loaded_modules(case.code, case.env) - bare_loaded - {ln.name for ln in new}
            # importlib registers the frozen import machinery under these names: no cost.
            if not name.startswith("importlib._bootstrap")
        )
        print()
        print(
            f"-X importtime, {case.title}: {len(new)} modules beyond the bare interpreter, "
            f"sum of self times {total_self / 1e3:.2f} ms (median of {passes} passes)"
        )
        # The peers and the other tree: the summary line is enough (this tree's listing
        # is the one a change is made to).
        if not case.required or case.tree == "other":
            continue
        print(
            f"  {'self us':>8} {'cumul us':>9}  module (nested as importtime prints it: "
            "a module's imports are listed above it, indented)"
        )
        for line in new:
            flag = "  <-- >= 0.5 ms" if line.cumulative_us >= FLAG_US else ""
            indent = "  " * line.depth
            print(f"  {line.self_us:>8} {line.cumulative_us:>9}  {indent}{line.name}{flag}")
        if untimed:
            print(
                "  loaded but not timed by -X importtime (imported through"
                " importlib.import_module, which bypasses the C import path that"
                " -X importtime instruments; their own time is missing above):"
            )
            for name in untimed:
                print(f"  {'':>8} {'':>9}  {name}")


def count_instructions(code: str, env: dict[str, str], passes: int) -> int | None:
    """Instructions a fresh interpreter running ``code`` executes (callgrind's total, the
    median of ``passes`` runs), or None where valgrind cannot run it.

    Unlike wall time, the count does not move with the machine's load: with the hash
    seed fixed, the same tree gives the same count to a few instructions, so a change of
    a few microseconds at INIT shows (compare trees checked out at paths of equal length:
    the paths themselves are in the count).
    """
    counts: list[int] = []
    for _ in range(passes):
        try:
            result = subprocess.run(
                [*CALLGRIND, sys.executable, "-c", code],
                env={**env, "PYTHONHASHSEED": "0"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        total = [line for line in result.stderr.splitlines() if "Collected :" in line]
        if result.returncode != 0 or not total:
            return None
        counts.append(int(total[-1].rsplit(":", 1)[1]))
    return int(statistics.median(counts))


def count_in_tree(
    label: str, code: str, tree: Tree, compared: bool, passes: int
) -> tuple[str, int | None]:
    """Run ``code`` once in ``tree`` (its .pyc files), then count it; say why not where it
    cannot be. The title to print the count under, and the count (None: not measured)."""
    title = f"{label} ({tree.name} tree)" if compared else label
    warm = run_child(code, tree.env)
    if warm.returncode != 0:
        print(f"    {title:<{LABEL_WIDTH}} not measured: {failure_of(warm)}")
        return title, None
    count = count_instructions(code, tree.env, passes)
    if count is None:
        print(f"    {title:<{LABEL_WIDTH}} not measured: valgrind is missing or failed")
    return title, count


def print_instruction_section(
    heading: str,
    baseline: tuple[str, str],
    probes: Sequence[tuple[str, str]],
    trees: list[Tree],
    passes: int,
) -> None:
    """Count ``baseline`` (label, code) and each of ``probes`` in every tree, and print the
    counts with what each adds to its tree's baseline, before and now when two trees are
    compared."""
    print()
    print(f"  {heading}")
    compared = len(trees) > 1
    # A baseline per tree, though it imports nothing of the probe: the trees' sys.path may
    # differ by more than their own entry. An editable install of this checkout puts its
    # src on sys.path too, where Python drops it as a duplicate of this tree's PYTHONPATH
    # but not of the other's: every import that searches the whole path (the runtime
    # client's own) stats one directory more there, ~0.1 M instructions in all.
    bases: dict[str, int] = {}
    for tree in trees:
        title, base = count_in_tree(*baseline, tree, compared, passes)
        if base is None:
            return  # (nothing to count the cases against)
        bases[tree.name] = base
        print(f"    {title:<{LABEL_WIDTH}} {base / 1e6:10.3f} M")
    for label, code in probes:
        added: dict[str, int] = {}
        for tree in trees:
            title, count = count_in_tree(label, code, tree, compared, passes)
            if count is None:
                continue
            added[tree.name] = count - bases[tree.name]
            print(
                f"    {title:<{LABEL_WIDTH}} {count / 1e6:10.3f} M"
                f"  added {added[tree.name] / 1e6:+.3f} M"
            )
        if compared and len(added) == 2:
            before, now = added["other"], added["this"]
            print(
                f"    {'':<{LABEL_WIDTH}} before -> now:"
                f" {before / 1e6:+.3f} M -> {now / 1e6:+.3f} M"
                f"  (difference {(now - before) / 1e6:+.3f} M)"
            )


def print_instructions(trees: list[Tree], passes: int) -> None:
    """Instructions executed by the probe's cases, against the bare interpreter, in the
    runtime, and in a handler importing boto3; in each tree."""
    print()
    print(
        f"Instructions executed (valgrind --tool=callgrind, PYTHONHASHSEED=0, median of {passes})"
    )
    if len(trees) > 1 and len(str(trees[0].src)) != len(str(trees[1].src)):
        print(
            f"  warning: the trees' paths differ in length ({trees[0].src}, {trees[1].src}):"
            " the paths are in the counts, so before and now differ by that too"
        )
    print_instruction_section(
        "against the bare interpreter", ("bare interpreter", "pass"), PROBE_CASES, trees, passes
    )
    runtime = run_child(RUNTIME_PREFIX, trees[0].env)
    if runtime.returncode != 0:
        print(
            f"\n  in the runtime: skipped, awslambdaric cannot be imported: {failure_of(runtime)}"
        )
        return
    print_instruction_section(
        f"in the runtime: each code after {RUNTIME_PREFIX.strip()!r}",
        ("runtime interface client", RUNTIME_PREFIX),
        [(label, RUNTIME_PREFIX + code) for label, code in PROBE_CASES],
        trees,
        passes,
    )
    print_per_import(trees, passes)
    boto3 = run_child(BOTO3_BASELINE, trees[0].env)
    if boto3.returncode != 0:
        print(
            f"\n  handler importing boto3: skipped, boto3 cannot be imported: {failure_of(boto3)}"
        )
        return
    print_instruction_section(
        "a handler importing boto3, in the runtime: against the runtime and import boto3",
        ("runtime + import boto3", RUNTIME_PREFIX + BOTO3_BASELINE),
        [(BOTO3_CASE[0], RUNTIME_PREFIX + BOTO3_CASE[1])],
        trees,
        passes,
    )


def per_import_cases(directory: str) -> list[tuple[str, str]]:
    """The four runs whose counts give the probe's instructions per imported module: the
    runtime with and without ``install()``, each with and without importing the
    ``PER_IMPORT_MODULES`` modules written to ``directory``."""
    runtime = RUNTIME_PREFIX + f"import sys; sys.path.insert(0, {directory!r})\n"
    install = "import lifecycle_probe; lifecycle_probe.install()\n"
    imports = "".join(f"import lp_bench_{index}\n" for index in range(PER_IMPORT_MODULES))
    return [
        ("runtime", runtime),
        (f"runtime, {PER_IMPORT_MODULES} imports", runtime + imports),
        ("install()", runtime + install),
        (f"install(), {PER_IMPORT_MODULES} imports", runtime + install + imports),
    ]


def added_per_import(counts: Sequence[int]) -> float:
    """Instructions the probe adds per module, from the four counts of per_import_cases."""
    bare, bare_imports, installed, installed_imports = counts
    return ((installed_imports - installed) - (bare_imports - bare)) / PER_IMPORT_MODULES


def print_per_import(trees: list[Tree], passes: int) -> None:
    """Instructions the probe adds to each module the function imports at INIT, in the
    runtime: empty modules, so that the figure is the probe's part of an import alone."""
    print()
    print(
        f"  per module the function imports at INIT ({PER_IMPORT_MODULES} empty modules after"
        " install(), in the runtime, against the same imports without the probe)"
    )
    compared = len(trees) > 1
    added: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lp_bench_") as directory:
        for index in range(PER_IMPORT_MODULES):
            Path(directory, f"lp_bench_{index}.py").write_text(f"X = {index}\n")
        cases = per_import_cases(directory)
        for tree in trees:
            counts = [count_in_tree(label, code, tree, compared, passes) for label, code in cases]
            values = [count for _, count in counts]
            if any(count is None for count in values):
                continue
            added[tree.name] = added_per_import([count for count in values if count is not None])
            title = f"per import ({tree.name} tree)" if compared else "per import"
            print(f"    {title:<{LABEL_WIDTH}} {added[tree.name] / 1e3:10.1f} k added")
    if compared and len(added) == 2:
        before, now = added["other"], added["this"]
        print(
            f"    {'':<{LABEL_WIDTH}} before -> now: {before / 1e3:.1f} k -> {now / 1e3:.1f} k"
            f" per import  (difference {(now - before) / 1e3:+.1f} k)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=40, help="timed runs per command (40)")
    parser.add_argument(
        "--importtime-runs",
        type=int,
        default=5,
        help="-X importtime passes per command; the listing shows medians (5)",
    )
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="PASSES",
        help="also count the instructions each of the probe's cases executes, under "
        "valgrind, the median of PASSES runs (3 is plenty: the count is deterministic)",
    )
    parser.add_argument(
        "--other-tree",
        type=resolve_tree,
        metavar="PATH",
        help="another checkout (its root or its src directory): the probe's cases run in "
        "both trees, in the same rounds, for a before/now comparison",
    )
    args = parser.parse_args(argv)
    runs = max(1, args.runs)
    passes = max(1, args.importtime_runs)

    trees = make_trees(child_environment(), args.other_tree)
    print(f"interpreter: {sys.executable} (Python {sys.version.split()[0]})")
    print(
        "children run without PYTHONDONTWRITEBYTECODE and LIFECYCLE_PROBE_DISABLED, with "
        f"PYTHONPATH the tree's src; {WARMUP_RUNS} warm-up runs each (.pyc files written)"
    )
    if not check_trees(trees):
        return 0
    cases = make_cases(trees)
    warm_up(cases)
    for case in cases:
        # The other tree may predate a case: its row says so, the rest is still measured.
        if case.required and not case.available and case.tree != "other":
            print(f"cannot run {case.title!r}: {case.failure}")
            return 0
    measure(cases, runs)
    print_timing(cases, runs)
    print_importtime(cases, passes)
    if args.instructions > 0:
        print_instructions(trees, args.instructions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
