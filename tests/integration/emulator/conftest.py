"""Fixtures for the local Lambda's own tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.emulator.emulator_support import runtime_processes

HANDLERS = Path(__file__).resolve().parents[1] / "fixtures" / "emulator_handlers"


@pytest.fixture
def handlers_dir() -> Path:
    """The directory of the emulator's handler fixtures (their LAMBDA_TASK_ROOT)."""
    return HANDLERS


@pytest.fixture(autouse=True)
def no_runtime_left_behind():
    """After each test (and its local Lambdas' teardown), no runtime of ours remains."""
    yield
    leftovers = runtime_processes(parent=os.getpid())
    assert not leftovers, f"runtime processes left behind: {leftovers}"
