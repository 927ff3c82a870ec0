"""Fixtures of the zero-code tests: the layer's exec wrapper in the local Lambda, started the
way Lambda's managed runtimes start it (the handler read from ``_HANDLER``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from lifecycle_probe.emulator import LocalLambda
from tests.integration.zero_code.paths import FIXTURES, MANAGED_RUNTIME


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    """A copy of the zero-code handler fixtures (``*.py.txt`` become ``*.py``: the syntax
    error one is kept out of the linters' sight in the repository)."""
    target = tmp_path / "task"
    target.mkdir()
    for source in FIXTURES.iterdir():
        if source.name.endswith(".py"):
            shutil.copy(source, target / source.name)
        elif source.name.endswith(".py.txt"):
            shutil.copy(source, target / source.name.removesuffix(".txt"))
    return target


@pytest.fixture
def chain(tmp_path: Path):
    """``chain(first, second)``: a wrapper script that runs ``first`` with ``second`` (then
    the runtime command) as its arguments, as a user chains two layers' wrappers."""

    def make(*wrappers: Path) -> Path:
        script = tmp_path / f"chain-{len(list(tmp_path.glob('chain-*')))}"
        script.write_text("#!/bin/bash\nexec " + " ".join(f"'{w}'" for w in wrappers) + ' "$@"\n')
        script.chmod(0o755)
        return script

    return make


@pytest.fixture
def run_function(local_lambda, code_dir):
    """``run_function(handler, wrapper=None, **env)``: a started local Lambda running
    ``handler`` from the fixtures behind the managed-runtime stand-in, with ``wrapper`` as
    the function's exec wrapper (None: no wrapper)."""

    def start(handler: str, wrapper: Path | None = None, **env: str) -> LocalLambda:
        variables = {
            "ZERO_CODE_EXEC_WRAPPER": str(wrapper) if wrapper else "",
            # the OpenTelemetry layer stand-in's python3: this one, which has its packages
            "OTEL_STAND_IN_PYTHON": sys.executable,
            **env,
        }
        emulator: LocalLambda = local_lambda(
            handler, code_dir, env=variables, exec_wrapper=MANAGED_RUNTIME
        )
        return emulator

    return start
