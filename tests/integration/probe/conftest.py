"""Fixtures for the probe's integration tests in the local Lambda."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle_probe.testing import local_lambda

__all__ = ["local_lambda"]

HANDLERS = Path(__file__).resolve().parents[1] / "fixtures" / "probe_handlers"


@pytest.fixture
def probe_handlers() -> Path:
    """The code directory of the probed handler fixtures."""
    return HANDLERS
