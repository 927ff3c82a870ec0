"""What every fault test checks: nothing lost unaccounted, one warning, no secret."""

from __future__ import annotations

import re

from tests.integration.faults.servers import FaultCollector

# The SDK exporters' own lines, which must not reach the function's log.
SDK_LINES = ("Failed to export", "Transient error", "Failed to write", "retrying in")


def unaccounted(collector: FaultCollector, request_ids: list[str]) -> tuple[int, int]:
    """(spans, metrics): invocations neither delivered nor counted as dropped."""
    delivered = len(collector.invocation_ids() & set(request_ids))
    spans = len(request_ids) - delivered
    spans -= collector.total("lifecycle.telemetry.dropped", signal="spans")
    metrics = len(request_ids) - collector.total("faas.invocations")
    metrics -= collector.total("lifecycle.telemetry.dropped", signal="metrics")
    return max(0, spans), max(0, metrics)


def probe_warnings(log: str) -> list[str]:
    """The probe's warning lines in a runtime process's log (message part only)."""
    return [m.group(0) for m in re.finditer(r"lifecycle_probe: [^\n]*", log)]


def assert_one_warning_each(log: str, secret: str | None = None) -> list[str]:
    """Every probe warning appears once; no SDK exporter line; no secret anywhere."""
    warnings = probe_warnings(log)
    assert len(warnings) == len(set(warnings)), warnings
    for line in SDK_LINES:
        assert line not in log, log
    if secret is not None:
        assert secret not in log
    return warnings
