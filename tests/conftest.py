"""Shared test set-up: every test starts in a fresh environment with no probe variables."""

from __future__ import annotations

import os

import pytest

from lifecycle_probe.installation import reset_installation
from lifecycle_probe.testing import fresh_environment


@pytest.fixture(autouse=True)
def _isolated_lifecycle(monkeypatch):
    # GIVEN no LIFECYCLE_PROBE_*/Lambda variables leak in from the developer's shell
    for name in list(os.environ):
        if name.startswith(("LIFECYCLE_PROBE_", "OTEL_EXPORTER_OTLP")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("AWS_LAMBDA_INITIALIZATION_TYPE", raising=False)
    fresh_environment()
    reset_installation()
    yield
    reset_installation()
