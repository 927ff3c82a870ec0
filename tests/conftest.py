"""Shared test set-up: every test starts in a fresh environment with no probe variables,
and a test that reaches a server is marked ``services`` (see tests/services.py)."""

from __future__ import annotations

import os

import pytest

from lifecycle_probe.config import Config
from lifecycle_probe.testing import fresh_environment
from tests.services import mark_service_tests


def pytest_collection_modifyitems(items):
    mark_service_tests(items)


@pytest.fixture(autouse=True)
def _isolated_lifecycle(monkeypatch):
    # GIVEN no probe configuration or Lambda variables leak in from the developer's shell
    # (test-run switches such as LIFECYCLE_PROBE_REQUIRE_SERVICES stay)
    configuration = {"LIFECYCLE_PROBE_" + name.upper() for name in Config._fields}
    configuration.add("LIFECYCLE_PROBE_HANDLER")
    for name in list(os.environ):
        if name in configuration or name.startswith("OTEL_EXPORTER_OTLP"):
            monkeypatch.delenv(name)
    for name in ("AWS_LAMBDA_INITIALIZATION_TYPE", "_HANDLER", "_LIFECYCLE_PROBE_INIT_START"):
        monkeypatch.delenv(name, raising=False)
    fresh_environment()
    yield
    fresh_environment()
