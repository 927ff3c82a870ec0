"""An in-memory metric exporter, the counterpart of the SDK's ``InMemorySpanExporter``.

For tests and benchmarks: ``OtelSink(..., metric_exporter=InMemoryMetricExporter())``
keeps every ``MetricsData`` the sink exported, one per flush that had points.
"""

from __future__ import annotations

import _thread
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

__all__ = ["InMemoryMetricExporter"]


class InMemoryMetricExporter(MetricExporter):
    """Keeps exported metrics in a list; ``failing = True`` makes it refuse them instead."""

    def __init__(self) -> None:
        super().__init__()
        self._exported: list[MetricsData] = []
        self._lock = _thread.allocate_lock()
        self.failing = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self.failing:
            return MetricExportResult.FAILURE
        with self._lock:
            self._exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def get_finished_metrics(self) -> list[MetricsData]:
        """Every export so far, oldest first."""
        with self._lock:
            return list(self._exported)

    def clear(self) -> None:
        with self._lock:
            self._exported.clear()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None
