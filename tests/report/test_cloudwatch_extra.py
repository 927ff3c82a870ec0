"""boto3 is the ``cloudwatch`` extra: without it, ``report --cloudwatch`` says how to get it."""

from __future__ import annotations

import subprocess
import sys

# boto3 hidden from the import system, as in an install without the extra.
WITHOUT_BOTO3 = """
import sys
sys.modules["boto3"] = None
from lifecycle_probe.cli import main
sys.exit(main(["report", "--cloudwatch", "/aws/lambda/orders", "--region", "us-east-1"]))
"""


def test_report_cloudwatch_without_boto3_says_which_extra_to_install():
    completed = subprocess.run(
        [sys.executable, "-c", WITHOUT_BOTO3],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "--cloudwatch needs boto3" in completed.stderr
    assert "pip install 'lifecycle-probe[cloudwatch]'" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_probe_requires_no_boto3():
    from importlib import import_module
    from pathlib import Path

    tomllib = import_module("tomllib")  # Python 3.11+, as the development machine and CI
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    assert not [r for r in project["dependencies"] if r.lower().startswith(("boto3", "botocore"))]
    assert project["optional-dependencies"]["cloudwatch"] == ["boto3>=1.34"]
    assert "lifecycle-probe[emulator,cloudwatch]" in project["optional-dependencies"]["dev"]
