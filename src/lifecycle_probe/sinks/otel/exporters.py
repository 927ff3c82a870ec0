"""The destinations of the probe's telemetry: ``otlp`` (OTLP/HTTP, JSON bodies) and
``otlp-file`` (OTLP JSON lines), both encoding with :mod:`.encoding`.

An exporter takes a batch of spans or one collection of metric points and either returns
(the destination took it) or raises :class:`~.failures.ExportError` with a kind safe to
log; the channels (``channels.py``) decide what is sent again and what is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lifecycle_probe.sinks.otel.encoding import Encoder
from lifecycle_probe.sinks.otel.endpoints import endpoint
from lifecycle_probe.sinks.otel.failures import ExportError, error_kind
from lifecycle_probe.sinks.otel.otlp_file import AppendedLines
from lifecycle_probe.sinks.otel.transport import HttpTransport

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from lifecycle_probe.sinks.otel.metrics import MetricData
    from lifecycle_probe.sinks.otel.spans import Span

__all__ = ["Exporter", "InMemoryExporter", "OtlpFileExporter", "OtlpHttpExporter"]


class Exporter:
    """What every destination offers a channel."""

    # Which signals it takes, and how a warning may name where each goes.
    takes_spans = True
    takes_metrics = True
    destinations: dict[str, str]

    def export_spans(self, spans: Sequence[Span], timeout_s: float) -> None:
        raise NotImplementedError

    def export_metrics(self, metrics: Sequence[MetricData], timeout_s: float) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Let go of what the destination holds (a connection, a file)."""

    def abandon(self) -> None:
        """In a forked child: close the child's copies, never the parent's connection."""
        self.shutdown()


class OtlpHttpExporter(Exporter):
    """OTLP/HTTP with JSON bodies to the endpoints of ``OTEL_EXPORTER_OTLP_*``."""

    def __init__(
        self,
        resource: Mapping[str, Any],
        scope: tuple[str, str],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._encoder = Encoder(resource, scope)
        agent = f"lifecycle-probe/{scope[1]}"
        self._traces = HttpTransport(endpoint("traces", environ), agent)
        self._metrics = HttpTransport(endpoint("metrics", environ), agent)
        self.destinations = {
            "spans": self._traces.destination,
            "metrics": self._metrics.destination,
        }

    def export_spans(self, spans: Sequence[Span], timeout_s: float) -> None:
        self._traces.post(self._encoder.spans(spans), timeout_s)

    def export_metrics(self, metrics: Sequence[MetricData], timeout_s: float) -> None:
        self._metrics.post(self._encoder.metrics(metrics), timeout_s)

    def shutdown(self) -> None:
        self._traces.close()
        self._metrics.close()


class OtlpFileExporter(Exporter):
    """One OTLP JSON export request per line of a file (DESIGN.md §2 "File format")."""

    def __init__(self, resource: Mapping[str, Any], scope: tuple[str, str], path: str) -> None:
        self._encoder = Encoder(resource, scope)
        self._file = AppendedLines(path)
        self.destinations = {"spans": f"the OTLP file {path}", "metrics": f"the OTLP file {path}"}

    def _write(self, line: bytes) -> None:
        try:
            self._file.write_line(line + b"\n")
        except OSError as exc:
            raise ExportError(error_kind(exc)) from None

    def export_spans(self, spans: Sequence[Span], timeout_s: float) -> None:
        self._write(self._encoder.spans(spans))

    def export_metrics(self, metrics: Sequence[MetricData], timeout_s: float) -> None:
        self._write(self._encoder.metrics(metrics))

    def shutdown(self) -> None:
        self._file.close()

    def abandon(self) -> None:
        self._file.close_inherited()


class InMemoryExporter(Exporter):
    """Keeps every batch of spans and every metric collection it is given, unencoded: the
    probe's own destination for tests and benchmarks."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: list[list[MetricData]] = []
        self.destinations = {"spans": "memory", "metrics": "memory"}

    def export_spans(self, spans: Sequence[Span], timeout_s: float) -> None:
        self.spans.extend(spans)

    def export_metrics(self, metrics: Sequence[MetricData], timeout_s: float) -> None:
        self.metrics.append(list(metrics))

    def clear(self) -> None:
        self.spans.clear()
        self.metrics.clear()
