"""The public surface: the package's names, ``__all__`` of the public modules,
``__version__`` without installed metadata, and ``lifecycle_probe.testing``'s vocabulary."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lifecycle_probe
from lifecycle_probe import probe
from lifecycle_probe.testing import FakeContext, capture_records, fresh_environment

SRC = Path(lifecycle_probe.__file__).resolve().parents[1]

# The modules users import (README, DESIGN.md §2). The zero-code entry point is read, not
# imported: importing it resolves and wraps the function named by LIFECYCLE_PROBE_HANDLER.
PUBLIC_MODULES = [
    "lifecycle_probe",
    "lifecycle_probe.cli",
    "lifecycle_probe.connections",
    "lifecycle_probe.emulator",
    "lifecycle_probe.emulator.pytest_plugin",
    "lifecycle_probe.facts",
    "lifecycle_probe.report",
    "lifecycle_probe.report.advice",
    "lifecycle_probe.report.cloudwatch",
    "lifecycle_probe.report.html",
    "lifecycle_probe.report.reader",
    "lifecycle_probe.report.records",
    "lifecycle_probe.report.summary",
    "lifecycle_probe.report.text",
    "lifecycle_probe.testing",
]

# Every module of the emulator (all but its ``python -m`` entry point), found rather than
# listed, so that a new one without ``__all__`` fails here.
EMULATOR_MODULES = [
    f"lifecycle_probe.emulator.{module.name}"
    for module in pkgutil.iter_modules([str(SRC / "lifecycle_probe" / "emulator")])
    if module.name != "__main__"
]


def run_python(code: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *options, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- the package ---------------------------------------------------------------------------


def test_the_package_offers_exactly_its_all():
    assert lifecycle_probe.__all__ == [
        "LifecycleFacts",
        "__version__",
        "current",
        "install",
        "probe",
    ]
    assert dir(lifecycle_probe) == sorted(lifecycle_probe.__all__)
    for name in lifecycle_probe.__all__:
        assert getattr(lifecycle_probe, name) is not None


def test_current_returns_the_exported_lifecycle_facts():
    from lifecycle_probe.records import LifecycleFacts

    assert lifecycle_probe.LifecycleFacts is LifecycleFacts

    @probe(exporter="none")
    def handler(event, context):
        return lifecycle_probe.current()

    facts = handler({}, FakeContext())
    assert isinstance(facts, lifecycle_probe.LifecycleFacts)
    assert isinstance(lifecycle_probe.current(), lifecycle_probe.LifecycleFacts)


def test_names_are_loaded_on_first_use():
    # A fresh interpreter: importing the package loads none of the modules behind its names
    # (INIT pays for what it uses); asking for LifecycleFacts loads the model only.
    done = run_python(
        "import sys, lifecycle_probe\n"
        "print(sorted(m for m in sys.modules if m.startswith('lifecycle_probe')))\n"
        "lifecycle_probe.LifecycleFacts\n"
        "print('lifecycle_probe.records' in sys.modules, 'lifecycle_probe.decorator' in "
        "sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()
    assert before == "['lifecycle_probe']"
    assert after == "True False"


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    assert lifecycle_probe.__version__ == version("lifecycle-probe")


def test_version_without_installed_metadata_is_an_attribute_error():
    # GIVEN the package run from its source tree with no installed metadata: -S leaves the
    # virtual environment (and its lifecycle_probe dist-info) off sys.path
    done = run_python(
        "import sys\n"
        f"sys.path.insert(0, {str(SRC)!r})\n"
        "import lifecycle_probe\n"
        "print(hasattr(lifecycle_probe, '__version__'))\n"
        "print(getattr(lifecycle_probe, '__version__', 'unknown'))\n"
        "try:\n"
        "    lifecycle_probe.__version__\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n",
        "-S",
    )
    # THEN __version__ behaves as a missing attribute: hasattr False, getattr's default
    assert done.returncode == 0, done.stderr
    has, default, error = done.stdout.splitlines()
    assert (has, default) == ("False", "unknown")
    assert error.startswith("AttributeError module 'lifecycle_probe' has no attribute")
    assert "no installed metadata" in error


# -- __all__ of the public modules ---------------------------------------------------------


def test_the_emulator_modules_are_found():
    assert "lifecycle_probe.emulator.local_lambda" in EMULATOR_MODULES
    assert "lifecycle_probe.emulator.__main__" not in EMULATOR_MODULES


@pytest.mark.parametrize("name", list(dict.fromkeys(PUBLIC_MODULES + EMULATOR_MODULES)))
def test_every_public_module_has_an_all_of_names_it_defines(name):
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported, name
    assert len(set(exported)) == len(exported)
    for attribute in exported:
        if (name, attribute) != ("lifecycle_probe", "__version__"):
            assert not attribute.startswith("_"), f"{name}.__all__ names {attribute!r}"
            assert hasattr(module, attribute), f"{name}.__all__ names {attribute!r}"


def every_module(path: Path, prefix: str) -> list[tuple[str, Path]]:
    """Every module of the package under ``path`` (found by pkgutil, recursively, none
    imported: the zero-code entry point and the demo's functions act when imported), but
    the ``python -m`` entry points."""
    found = [(prefix, path / "__init__.py")]
    for module in pkgutil.iter_modules([str(path)]):
        if module.name == "__main__":
            continue
        name = f"{prefix}.{module.name}"
        if module.ispkg:
            found += every_module(path / module.name, name)
        else:
            found.append((name, path / f"{module.name}.py"))
    return found


ALL_MODULES = every_module(SRC / "lifecycle_probe", "lifecycle_probe")


def test_every_module_of_the_package_is_walked():
    names = [name for name, _ in ALL_MODULES]
    for expected in (
        "lifecycle_probe.config",
        "lifecycle_probe.connections.reuse",
        "lifecycle_probe.sinks.otel.channels",
        "lifecycle_probe.demo.functions.orders",
        "lifecycle_probe.handler",
    ):
        assert expected in names
    assert not [name for name in names if name.endswith("__main__")]
    assert len(names) == len(set(names)) > 80


@pytest.mark.parametrize(("name", "path"), ALL_MODULES, ids=[name for name, _ in ALL_MODULES])
def test_every_module_has_an_all_of_public_names_it_defines(name, path):
    # Read, not imported: names bound at the top (in TYPE_CHECKING blocks too, which the
    # lazy packages' __getattr__ serves) are what the module defines.
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined: set[str] = set()
    exported: list[str] | None = None

    def bind(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                defined.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                defined.update(
                    n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)
                )
            elif isinstance(node, (ast.If, ast.Try)):
                bind(node.body)
                bind(node.orelse)
                for handler in getattr(node, "handlers", []):
                    bind(handler.body)

    bind(tree.body)
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "__all__":
            value = getattr(node, "value", None)
            assert isinstance(value, ast.List), f"{name}.__all__ is not a list literal"
            exported = [ast.literal_eval(element) for element in value.elts]
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), name
    for attribute in exported:
        if (name, attribute) != ("lifecycle_probe", "__version__"):
            assert not attribute.startswith("_"), f"{name}.__all__ names {attribute!r}"
        assert attribute in defined, f"{name}.__all__ names {attribute!r}, not defined there"


def test_the_emulator_package_loads_its_names_on_first_use():
    # A fresh interpreter: the package alone loads none of the emulator (pytest imports it
    # at start-up to reach the local_lambda fixture); a name loads the module defining it.
    done = run_python(
        "import sys, lifecycle_probe.emulator as emulator\n"
        "print(sorted(m for m in sys.modules if m.startswith('lifecycle_probe')))\n"
        "print(dir(emulator) == sorted(emulator.__all__))\n"
        "from lifecycle_probe.emulator import COLD, FunctionConfig, truth\n"
        "print(COLD, FunctionConfig.__module__, truth.COLD is COLD)\n"
        "print('lifecycle_probe.emulator.local_lambda' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['lifecycle_probe', 'lifecycle_probe.emulator']",
        "True",
        "cold lifecycle_probe.emulator.function True",
        "False",
    ]


def test_the_zero_code_entry_point_exports_its_handler():
    tree = ast.parse((SRC / "lifecycle_probe" / "handler.py").read_text())
    [exported] = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    ]
    assert ast.literal_eval(exported) == ["handler"]


# -- lifecycle_probe.testing: one vocabulary, that of lifecycle.start ----------------------


@pytest.mark.parametrize(
    ("start", "init_type"),
    [
        ("cold", "on-demand"),
        ("provisioned", "provisioned-concurrency"),
        ("proactive", "on-demand"),
        ("restored", "snap-start"),
    ],
)
def test_fresh_environment_gives_the_start_it_is_asked_for(start, init_type):
    environment = fresh_environment(start=start)

    @probe(exporter="none")
    def handler(event, context):
        return lifecycle_probe.current()

    with capture_records() as captured:
        first = handler({}, FakeContext())
        handler({}, FakeContext())
    assert captured.starts == [start, "warm"]
    # the Lambda variable behind it, as the facts and the records tell it
    assert environment.init_type == first.init_type == init_type


def test_a_managed_instances_worker_starts_cold_or_proactive():
    variables = {"AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances"}
    environment = fresh_environment(start="proactive", environ=variables)
    assert environment.init_type == "lambda-managed-instances"
    with capture_records() as captured:
        probe(exporter="none")(lambda event, context: None)({}, FakeContext())
    assert captured.starts == ["proactive"]


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (
            "provisioned-concurrency",
            "start is one of cold, provisioned, proactive, restored "
            "(AWS_LAMBDA_INITIALIZATION_TYPE='provisioned-concurrency' is start='provisioned')",
        ),
        ("snap-start", "(AWS_LAMBDA_INITIALIZATION_TYPE='snap-start' is start='restored')"),
        ("on-demand", "(AWS_LAMBDA_INITIALIZATION_TYPE='on-demand' is start='cold')"),
        ("warm", "(a fresh environment's first invocation is never warm)"),
        ("Cold", "fresh_environment(start='Cold'): start is one of cold, provisioned,"),
    ],
)
def test_an_unknown_start_is_a_clear_error(start, message):
    prefix = f"fresh_environment(start={start!r}): start is one of"
    with pytest.raises(ValueError, match=re.escape(prefix)) as raised:
        fresh_environment(start=start)
    assert message in str(raised.value)


def test_a_lambda_variable_that_contradicts_the_start_is_an_error():
    variables = {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
    with pytest.raises(ValueError, match="would give another start"):
        fresh_environment(start="cold", environ=variables)


def test_a_proactive_start_needs_an_exact_init_end():
    with pytest.raises(ValueError, match="needs exact=True"):
        fresh_environment(start="proactive", exact=False)


@pytest.mark.parametrize(
    ("start", "ago", "message"),
    [
        ("cold", 5, "init_ended_s_ago=5): INIT ended at least the proactive gap ago (1 s"),
        ("cold", 1, "would be a proactive start; use start='proactive'"),
        ("proactive", 0.5, "longer ago than the proactive gap (1 s"),
    ],
)
def test_an_init_age_on_the_wrong_side_of_the_proactive_gap_is_an_error(start, ago, message):
    # GIVEN the default proactive gap of 1 s
    # WHEN a start is asked for with an INIT age that would give the other start
    with pytest.raises(ValueError, match="proactive gap") as raised:
        fresh_environment(start=start, init_ended_s_ago=ago)
    # THEN the error names the proactive gap instead of a silent other start
    assert message in str(raised.value)
    assert "LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS" in str(raised.value)


def test_the_proactive_gap_of_the_variable_is_the_one_checked_and_defaulted(monkeypatch):
    # GIVEN a proactive gap of 10 s set by its variable
    monkeypatch.setenv("LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS", "10000")
    # THEN a cold start 5 s after INIT is fine, and the proactive default lies past 10 s
    fresh_environment(start="cold", init_ended_s_ago=5)
    environment = fresh_environment(start="proactive")

    with capture_records() as captured:
        probe(exporter="none")(lambda event, context: None)({}, FakeContext())
    assert captured.starts == ["proactive"]
    assert environment.init_end_ns is not None
    assert time.time_ns() - environment.init_end_ns > 10e9


@pytest.mark.parametrize("name", ["init_duration_s", "init_ended_s_ago"])
@pytest.mark.parametrize(
    "value",
    [-1, float("nan"), float("inf"), 1e300, 86_401, "soon"],
    ids=["negative", "nan", "inf", "1e300", "past a day", "text"],
)
def test_an_impossible_duration_is_a_clear_error_naming_the_parameter(name, value):
    with pytest.raises(ValueError, match=re.escape(f"({name}=")) as raised:
        fresh_environment(start="provisioned", **{name: value})
    assert str(raised.value).startswith(f"fresh_environment({name}={value!r}):")


def test_durations_at_the_bounds_are_taken_as_given():
    environment = fresh_environment(start="provisioned", init_duration_s=0, init_ended_s_ago=0)
    assert environment.init_end_ns is not None
    assert environment.init_start_ns == environment.init_end_ns
