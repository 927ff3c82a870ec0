"""``lifecycle-probe demo`` and ``emulate`` where the ``emulator`` extra (awslambdaric) is
not installed: one line naming the extra, exit status 2, nothing started.

The CLI runs in a subprocess whose ``sitecustomize`` (first on PYTHONPATH) makes
awslambdaric unimportable, as in an installation without the extra.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BLOCKER = textwrap.dedent(
    """
    import sys

    class NoRuntimeClient:
        # What an interpreter without the emulator extra says of awslambdaric.
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "awslambdaric" or name.startswith("awslambdaric."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoRuntimeClient())
    """
)
SRC = Path(__file__).resolve().parents[2] / "src"


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    # The blocker works: awslambdaric cannot be imported in this interpreter.
    check = subprocess.run(
        [sys.executable, "-c", "import awslambdaric"],
        env={"PYTHONPATH": f"{blocker}:{SRC}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode != 0
    assert "awslambdaric" in check.stderr
    return subprocess.run(
        [sys.executable, "-m", "lifecycle_probe.cli", *args],
        env={"PYTHONPATH": f"{blocker}:{SRC}", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("demo", "--output-dir", "demo-out"),
        ("emulate", "app.handler"),
    ],
    ids=["demo", "emulate"],
)
def test_demo_and_emulate_name_the_extra_and_start_nothing(tmp_path, args):
    done = run_cli(tmp_path, *args)
    # THEN one line naming the extra, on stderr, and status 2 (a usage error)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install 'lifecycle-probe[emulator]'" in lines[0]
    assert lines[0].startswith(f"lifecycle-probe {args[0]}: ")
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    # AND nothing was started or written (the demo makes its output directory first)
    assert not (tmp_path / "demo-out").exists()
