"""Fixtures of the fault matrix: the local Lambda, the fault handlers, fault collectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.faults.servers import FaultCollector

HANDLERS = Path(__file__).resolve().parents[1] / "fixtures" / "fault_handlers"


@pytest.fixture
def fault_handlers() -> Path:
    """The code directory of the fault matrix's functions."""
    return HANDLERS


@pytest.fixture
def collector_factory():
    """Makes started fault collectors, all stopped at teardown."""
    made: list[FaultCollector] = []

    def make(mode: str = "ok", **options) -> FaultCollector:
        collector = FaultCollector(mode, **options).start()
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.stop()
