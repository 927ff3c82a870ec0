"""The import tree, recorded in a fresh interpreter so that nothing is imported already."""

import json
import subprocess
import sys
import textwrap

import pytest

from lifecycle_probe.imports import origin_of
from lifecycle_probe.records import (
    ORIGIN_FUNCTION,
    ORIGIN_LAYER,
    ORIGIN_RUNTIME,
    ORIGIN_SITE_PACKAGES,
)

RECORDER = """
import json, sys
from lifecycle_probe.imports import start_import_tracing, active_tracer
phase = {"init": True}
start_import_tracing(lambda: phase["init"])
try:
    exec(compile(sys.argv[1], "<scenario>", "exec"), {"phase": phase})
finally:
    tracer = active_tracer()
    out = [r.as_dict() for r in tracer.take_init() + tracer.take_later()]
    print(json.dumps(out))
"""


def trace(tmp_path, scenario, modules=None, env=None):
    """Run ``scenario`` in a new interpreter with tracing on; the import records it made."""
    for name, body in (modules or {}).items():
        path = tmp_path.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    result = subprocess.run(
        [sys.executable, "-c", RECORDER, textwrap.dedent(scenario)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**(env or {}), "PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout.splitlines()[-1])
    return {r["module"]: r for r in records}, records


def test_nested_imports_form_a_tree_with_cumulative_and_self_time(tmp_path):
    # GIVEN outer (sleeps 30 ms) importing inner (sleeps 60 ms)
    modules = {
        "outer.py": "import time\ntime.sleep(0.03)\nimport inner\n",
        "inner.py": "import time\ntime.sleep(0.06)\n",
    }
    # (and how far the wall clock stepped meanwhile: the tracer stamps when by the wall
    # clock and how long by the performance counter, and this host's clock is sometimes
    # set back by tens of milliseconds)
    scenario = """
    import time, json
    wall, perf = time.time_ns(), time.perf_counter_ns()
    import outer
    step = (time.time_ns() - wall) - (time.perf_counter_ns() - perf)
    open("clock_step.json", "w").write(json.dumps(step))
    """
    by_name, _ = trace(tmp_path, scenario, modules)
    outer, inner = by_name["outer"], by_name["inner"]
    step_ns = abs(json.loads((tmp_path / "clock_step.json").read_text()))
    # THEN inner is outer's child; outer's time includes inner's, its self time does not
    assert inner["parent_id"] == outer["import_id"]
    assert outer["parent_id"] is None
    # (exactly in order when the clock did not step; else within the step)
    slack = 0 if step_ns < 1_000_000 else step_ns
    assert outer["start_ns"] <= inner["start_ns"] + slack
    assert inner["start_ns"] <= inner["end_ns"]
    assert inner["end_ns"] <= outer["end_ns"] + slack
    outer_total = outer["end_ns"] - outer["start_ns"]
    inner_total = inner["end_ns"] - inner["start_ns"]
    assert inner_total >= 60_000_000
    assert outer_total >= 90_000_000
    assert outer["self_ns"] == outer_total - inner_total
    assert outer["self_ns"] >= 30_000_000
    assert (outer["origin"], outer["during_init"], outer["error_type"]) == (
        ORIGIN_RUNTIME,
        True,
        None,
    )


def test_a_failing_import_is_recorded_and_its_error_propagates_unchanged(tmp_path):
    modules = {"broken.py": "import json\nraise ImportError('no backend here')\n"}
    scenario = """
    try:
        import broken
    except ImportError as exc:
        assert str(exc) == "no backend here", exc
    else:
        raise SystemExit("the import should have failed")
    """
    by_name, _ = trace(tmp_path, scenario, modules)
    assert by_name["broken"]["error_type"] == "ImportError"


def test_missing_module_is_recorded_as_not_found(tmp_path):
    scenario = """
    try:
        import no_such_module_anywhere
    except ModuleNotFoundError:
        pass
    """
    by_name, _ = trace(tmp_path, scenario)
    assert by_name["no_such_module_anywhere"]["error_type"] == "ModuleNotFoundError"


def test_circular_imports_and_packages(tmp_path):
    modules = {
        "pkg/__init__.py": "from pkg import a\n",
        "pkg/a.py": "from pkg import b\nVALUE = 1\n",
        "pkg/b.py": "import pkg.a\n",
    }
    by_name, _ = trace(tmp_path, "import pkg\nassert pkg.a.VALUE == 1", modules)
    assert by_name["pkg.a"]["parent_id"] == by_name["pkg"]["import_id"]
    assert by_name["pkg.b"]["parent_id"] == by_name["pkg.a"]["import_id"]


def test_namespace_packages_and_c_extensions(tmp_path):
    modules = {"nsroot/leaf.py": "X = 1\n"}
    # mmap is a C extension in lib-dynload that a bare interpreter has not imported
    scenario = "import nsroot.leaf\nimport mmap\nassert nsroot.leaf.X == 1"
    by_name, _ = trace(tmp_path, scenario, modules)
    assert {"nsroot", "nsroot.leaf", "mmap"} <= set(by_name)
    assert by_name["nsroot.leaf"]["parent_id"] is None
    assert by_name["mmap"]["error_type"] is None


def test_threads_importing_at_once_keep_separate_trees(tmp_path):
    modules = {
        "left.py": "import time\ntime.sleep(0.05)\nimport left_child\n",
        "left_child.py": "X = 1\n",
        "right.py": "import time\ntime.sleep(0.05)\nimport right_child\n",
        "right_child.py": "Y = 2\n",
    }
    scenario = """
    import threading
    threads = [threading.Thread(target=__import__, args=(n,)) for n in ("left", "right")]
    for t in threads: t.start()
    for t in threads: t.join()
    """
    by_name, _ = trace(tmp_path, scenario, modules)
    assert by_name["left_child"]["parent_id"] == by_name["left"]["import_id"]
    assert by_name["right_child"]["parent_id"] == by_name["right"]["import_id"]
    assert by_name["left"]["parent_id"] is None
    assert by_name["right"]["parent_id"] is None


def test_imports_after_init_are_marked(tmp_path):
    modules = {"early.py": "", "late.py": ""}
    by_name, _ = trace(tmp_path, "import early\nphase['init'] = False\nimport late", modules)
    assert by_name["early"]["during_init"] is True
    assert by_name["late"]["during_init"] is False


def test_the_probes_own_work_is_not_recorded(tmp_path):
    modules = {"mine.py": "", "theirs.py": ""}
    scenario = """
    from lifecycle_probe.probe_threads import probe_work
    with probe_work():
        import mine
    import theirs
    """
    by_name, _ = trace(tmp_path, scenario, modules)
    assert "theirs" in by_name
    assert "mine" not in by_name


def test_function_code_is_classified_by_the_task_root(tmp_path):
    by_name, _ = trace(
        tmp_path,
        "import handler_mod",
        {"handler_mod.py": ""},
        env={"LAMBDA_TASK_ROOT": str(tmp_path)},
    )
    assert by_name["handler_mod"]["origin"] == ORIGIN_FUNCTION


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (None, ORIGIN_RUNTIME),
        ("/var/task/app.py", ORIGIN_FUNCTION),
        ("/var/task/vendored/site-packages/x.py", ORIGIN_FUNCTION),
        ("/opt/python/lib/python3.12/site-packages/boto3/__init__.py", ORIGIN_LAYER),
        ("/var/lang/lib/python3.12/site-packages/awslambdaric/bootstrap.py", ORIGIN_SITE_PACKAGES),
        ("/var/lang/lib/python3.12/json/__init__.py", ORIGIN_RUNTIME),
        ("/var/runtime/bootstrap.py", ORIGIN_RUNTIME),
    ],
)
def test_origin_of(path, expected):
    assert origin_of(path, "/var/task") == expected


def test_import_module_of_a_loaded_module_records_nothing(tmp_path):
    scenario = """
    import importlib, once
    phase["init"] = False
    importlib.import_module("once")
    importlib.import_module("json")
    """
    _, records = trace(tmp_path, scenario, {"once.py": ""})
    assert [r["module"] for r in records if r["module"] in ("once", "json")].count("once") == 1
    assert not [r for r in records if not r["during_init"]]


def test_a_package_is_recorded_as_its_own_import_not_under_its_submodule(tmp_path):
    modules = {
        "pk/__init__.py": "import time\ntime.sleep(0.04)\n",
        "pk/sub/__init__.py": "",
        "pk/sub/leaf.py": "X = 1\n",
    }
    by_name, _ = trace(tmp_path, "import pk.sub.leaf", modules)
    # THEN pk and pk.sub are imports of their own, not children of pk.sub.leaf
    assert by_name["pk"]["parent_id"] is None
    assert by_name["pk.sub"]["parent_id"] is None
    assert by_name["pk.sub.leaf"]["parent_id"] is None
    leaf_total = by_name["pk.sub.leaf"]["end_ns"] - by_name["pk.sub.leaf"]["start_ns"]
    assert leaf_total < 40_000_000  # the package's 40 ms are not the leaf's


def test_unbalanced_resume_does_not_switch_tracing_off(tmp_path):
    scenario = """
    from lifecycle_probe.probe_threads import probe_work
    probe_work().__exit__(None, None, None)
    import still_seen
    with probe_work():
        import hidden
    import seen_again
    """
    modules = {"still_seen.py": "", "hidden.py": "", "seen_again.py": ""}
    by_name, _ = trace(tmp_path, scenario, modules)
    assert "still_seen" in by_name
    assert "hidden" not in by_name
    assert "seen_again" in by_name


def test_an_import_whose_origin_cannot_be_read_is_left_out_the_others_kept(tmp_path):
    # GIVEN a loader whose module's origin is a str whose methods raise (a hostile or broken
    # loader), imported between two ordinary modules
    scenario = """
        import importlib.util, sys

        class Odd(str):
            def startswith(self, *args):
                raise RuntimeError("no origin")

        class Loader:
            def create_module(self, spec):
                return None

            def exec_module(self, module):
                pass

        class Finder:
            def find_spec(self, name, path=None, target=None):
                if name == "odd":
                    return importlib.util.spec_from_loader("odd", Loader(), origin=Odd("/x/odd.py"))
                return None

        sys.meta_path.append(Finder())
        import before, odd, after
    """
    by_name, _ = trace(tmp_path, scenario, {"before.py": "", "after.py": ""})
    # THEN the tree is taken without that one import (its origin is classified when the
    # records are taken, and its failure must not lose the rest)
    assert "odd" not in by_name
    assert {"before", "after"} <= set(by_name)
