"""benchmarks/import_cost.py's cheap parts: which tree ``--other-tree`` names, and the
environment and labels of each tree's children. No child process, no valgrind, no timing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "import_cost.py"


@pytest.fixture(scope="module")
def import_cost() -> ModuleType:
    # benchmarks/ is no package: load the script by its path (registered under its name
    # while it runs: dataclasses looks its module up).
    spec = importlib.util.spec_from_file_location("import_cost", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_cost"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["import_cost"]
    return module


def a_checkout(root: Path) -> Path:
    (root / "src" / "lifecycle_probe").mkdir(parents=True)
    return root


def test_the_tree_is_the_src_directory_given_the_root_or_the_src(import_cost, tmp_path):
    # GIVEN a checkout with src/lifecycle_probe
    root = a_checkout(tmp_path / "before")
    # WHEN it is named by its root or by its src directory
    # THEN both name its src directory
    assert import_cost.resolve_tree(str(root)) == root / "src"
    assert import_cost.resolve_tree(str(root / "src")) == root / "src"


def test_a_relative_path_is_made_absolute_as_spelled(import_cost, tmp_path, monkeypatch):
    a_checkout(tmp_path / "before")
    monkeypatch.chdir(tmp_path)
    assert import_cost.resolve_tree("before") == tmp_path / "before" / "src"


def test_a_directory_without_lifecycle_probe_is_refused(import_cost, tmp_path, capsys):
    # GIVEN a directory that holds no lifecycle_probe, neither in src nor at its top
    (tmp_path / "src").mkdir()
    # WHEN the benchmark is asked to compare with it
    with pytest.raises(SystemExit) as exited:
        import_cost.main(["--other-tree", str(tmp_path)])
    # THEN argparse refuses it, in one line, before anything runs
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "argument --other-tree" in captured.err
    assert "lifecycle_probe" in captured.err


def test_each_tree_is_the_whole_pythonpath(import_cost, tmp_path):
    # GIVEN an inherited PYTHONPATH that could shadow a tree
    inherited = {"PYTHONPATH": "/elsewhere", "HOME": "/home/user"}
    other = a_checkout(tmp_path / "before") / "src"
    # WHEN the trees' environments are made
    trees = import_cost.make_trees(inherited, other)
    # THEN each child's PYTHONPATH is its tree's src alone, the rest inherited
    assert [tree.name for tree in trees] == ["this", "other"]
    assert trees[0].env == {"PYTHONPATH": str(import_cost.THIS_SRC), "HOME": "/home/user"}
    assert trees[1].env == {"PYTHONPATH": str(other), "HOME": "/home/user"}
    this_src = import_cost.THIS_SRC
    assert this_src == SCRIPT.parents[1] / "src"


def test_each_probe_case_runs_in_both_trees_labelled_by_tree(import_cost, tmp_path):
    trees = import_cost.make_trees({}, a_checkout(tmp_path / "before") / "src")
    cases = import_cost.make_cases(trees)
    probe_cases = [case for case in cases[1:] if case.required]
    labels = [label for label, _ in import_cost.PROBE_CASES]
    assert "@probe, emf exporter" in labels
    assert [case.title for case in probe_cases] == [
        f"{label} ({tree} tree)" for label in labels for tree in ("this", "other")
    ]
    by_name = {tree.name: tree for tree in trees}
    assert all(case.env is by_name[case.tree].env for case in probe_cases)
    # the bare interpreter and the peers: this tree's environment, no tree in the label
    others = [cases[0], *(case for case in cases if not case.required)]
    assert all(case.env is trees[0].env and case.title == case.label for case in others)


def test_one_tree_keeps_the_plain_labels(import_cost):
    cases = import_cost.make_cases(import_cost.make_trees({}, None))
    assert [case.title for case in cases[:4]] == [
        "bare interpreter",
        "import + install()",
        "from lifecycle_probe import probe",
        "@probe, emf exporter",
    ]


def test_each_tree_adds_to_its_own_baseline(import_cost, tmp_path, monkeypatch, capsys):
    # The counting itself is valgrind's (not run here): what is checked is the arithmetic.
    # GIVEN two trees whose baselines differ (an editable install's extra sys.path entry)
    trees = import_cost.make_trees({}, a_checkout(tmp_path / "before") / "src")
    by_env = {id(tree.env): tree.name for tree in trees}
    counts = {
        ("this", "pass"): 40_000_000,
        ("other", "pass"): 40_100_000,
        ("this", "import x"): 49_000_000,
        ("other", "import x"): 49_300_000,
    }

    class Done:
        returncode = 0

    monkeypatch.setattr(import_cost, "run_child", lambda code, env: Done())
    monkeypatch.setattr(
        import_cost,
        "count_instructions",
        lambda code, env, passes: counts[(by_env[id(env)], code)],
    )
    # WHEN a section is printed
    import_cost.print_instruction_section(
        "heading", ("bare interpreter", "pass"), [("case", "import x")], trees, 1
    )
    lines = {line.strip().split("  ")[0]: line for line in capsys.readouterr().out.splitlines()}
    # THEN each tree's case is counted against that tree's baseline
    assert lines["case (this tree)"].endswith("added +9.000 M")
    assert lines["case (other tree)"].endswith("added +9.200 M")
    assert lines["before -> now: +9.200 M -> +9.000 M"].endswith("(difference -0.200 M)")


def test_the_per_import_figure_is_the_probes_part_of_each_import(import_cost):
    # GIVEN the four counts: the runtime, with the modules imported, with install(), both
    modules = import_cost.PER_IMPORT_MODULES
    counts = [100_000_000, 100_000_000 + modules * 300_000, 108_000_000]
    counts.append(108_000_000 + modules * 315_000)
    # THEN the probe's part of each import is what install() adds to the imports' cost
    assert import_cost.added_per_import(counts) == 15_000


def test_the_per_import_runs_differ_by_install_and_by_the_imports(import_cost, tmp_path):
    # GIVEN the four runs for a directory of modules
    bare, bare_imports, installed, installed_imports = import_cost.per_import_cases(str(tmp_path))
    install = "import lifecycle_probe; lifecycle_probe.install()\n"
    imports = "".join(f"import lp_bench_{i}\n" for i in range(import_cost.PER_IMPORT_MODULES))
    # THEN each pair differs by the imports alone, and the two pairs by install() alone
    assert bare[1].startswith(import_cost.RUNTIME_PREFIX)
    assert str(tmp_path) in bare[1]
    assert bare_imports[1] == bare[1] + imports
    assert installed[1] == bare[1] + install
    assert installed_imports[1] == installed[1] + imports
