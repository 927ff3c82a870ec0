"""The ``local_lambda`` fixture as users get it: through the ``pytest11`` entry point.

Each test runs pytest in a fresh process on a project of its own in a temporary directory,
with a ``site-packages`` of this virtual environment's packages minus ``awslambdaric``:
a user who installed ``lifecycle-probe`` without the ``emulator`` extra. The entry point is
read from the installed metadata, as pytest reads it for every user.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import lifecycle_probe

SRC = Path(lifecycle_probe.__file__).resolve().parents[1]
PLUGIN = "lifecycle_probe.emulator.pytest_plugin"

# Written by the user project's conftest once pytest has loaded its plugins: what had
# been imported by then.
CONFTEST = """
import json, sys

def pytest_configure(config):
    ours = ("lifecycle_probe", "awslambdaric")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ours)
    with open("startup_modules.json", "w") as out:
        json.dump(loaded, out)
"""


@pytest.fixture
def without_awslambdaric(tmp_path):
    """A ``site-packages`` of links to this environment's, ``awslambdaric`` left out."""
    installed = Path(sysconfig.get_paths()["purelib"])
    assert (installed / "awslambdaric").is_dir(), "the dev environment has the extra"
    site = tmp_path / "site-packages"
    site.mkdir()
    for entry in installed.iterdir():
        if not entry.name.lower().startswith("awslambdaric"):
            (site / entry.name).symlink_to(entry)
    return site


@pytest.fixture
def user_project(tmp_path, without_awslambdaric):
    """``run(*args)``: pytest in a user's project (its own rootdir and ini file) without
    ``awslambdaric``, the probe from this source tree and its metadata from the venv."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "conftest.py").write_text(CONFTEST)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # -S: no site-packages but the one given (sys.path, so the metadata pytest reads
        # its entry points from too); the .pth that puts src/ on the path is not read.
        env = {"PYTHONPATH": f"{SRC}:{without_awslambdaric}", "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [sys.executable, "-S", "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    run.project = project  # type: ignore[attr-defined]
    return run


def startup_modules(project: Path) -> list[str]:
    loaded: list[str] = json.loads((project / "startup_modules.json").read_text())
    return loaded


def test_the_fixture_is_listed_without_the_emulator_extra(user_project):
    # WHEN a user without awslambdaric lists the fixtures
    listed = user_project("--fixtures")
    # THEN pytest ran, and local_lambda is there, from the plugin, with its docstring
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "local_lambda -- " in listed.stdout
    assert "pytest_plugin.py" in listed.stdout
    assert "A factory of started" in listed.stdout
    # AND nothing tried to import awslambdaric
    loaded = startup_modules(user_project.project)
    assert PLUGIN in loaded
    assert "awslambdaric" not in loaded


def test_only_a_test_that_asks_for_the_fixture_fails_and_says_what_to_install(user_project):
    (user_project.project / "test_user.py").write_text(
        textwrap.dedent("""
        def test_plain():
            assert 1 + 1 == 2

        def test_in_a_local_lambda(local_lambda):
            local_lambda("app.handler", ".")
        """)
    )
    run = user_project("-q", "-rA")
    assert run.returncode == 1, run.stdout + run.stderr
    # the fixture's set-up fails (an error, not a failure of the test body)
    assert "1 passed, 1 error" in run.stdout
    assert "pip install 'lifecycle-probe[emulator]'" in run.stdout
    # with the fixture's message, not a traceback through the emulator
    assert "local_lambda.py" not in run.stdout


def test_naming_the_plugin_with_p_as_well_is_the_same_plugin(user_project):
    # -p with the module (the way it was documented before the entry point) is no second
    # registration: pytest would stop at start-up on one
    listed = user_project("-p", PLUGIN, "--fixtures")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "local_lambda -- " in listed.stdout


def test_the_plugin_imports_nothing_of_its_own():
    # The plugin module alone, its package standing in with its __init__ not run: what
    # importing the plugin adds to pytest and the package.
    code = textwrap.dedent(f"""
        import sys, types, pytest, lifecycle_probe
        package = types.ModuleType("lifecycle_probe.emulator")
        package.__path__ = [lifecycle_probe.__path__[0] + "/emulator"]
        sys.modules["lifecycle_probe.emulator"] = package
        before = set(sys.modules)
        import {PLUGIN}
        print(sorted(set(sys.modules) - before))
    """)
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == repr([PLUGIN])


def test_pytest_start_up_imports_nothing_of_the_emulator(user_project):
    # WHEN pytest starts in a project that never asks for a local Lambda
    run = user_project("--collect-only", "-q")
    assert run.returncode == 5, run.stdout + run.stderr  # no tests collected
    # THEN the plugin was loaded, and no more of the probe than its package's __init__
    # modules: the emulator (http.server, ctypes, threads) waits for the first local Lambda
    loaded = startup_modules(user_project.project)
    assert set(loaded) == {"lifecycle_probe", "lifecycle_probe.emulator", PLUGIN}
