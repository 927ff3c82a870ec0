"""Records to telemetry, handed to the destinations: the export's heavy part.

Imported at the first drain (after the response, or in a sync flush), never at INIT.
``spans.py`` builds each invocation's finished spans, ``metrics.py`` aggregates its
measurements, ``resource.py`` says whose they are; each destination (``exporters.py``, or
SDK exporters through ``sdk_bridge.py``) has a channel of its own (``channels.py``) that
keeps what it has not taken yet.
"""

from __future__ import annotations

import time
from resource import RUSAGE_SELF, getrusage
from typing import TYPE_CHECKING

from lifecycle_probe._safe import report_failure, warn_once
from lifecycle_probe.sinks.otel.channels import Channel
from lifecycle_probe.sinks.otel.failures import (
    BUILD_FAILED,
    PLATFORM_FIGURES_EVICTED,
    QUEUE_FULL,
)
from lifecycle_probe.sinks.otel.metrics import Metrics
from lifecycle_probe.sinks.otel.resource import function_resource, scope
from lifecycle_probe.sinks.otel.spans import Span, Spans, env_sampler

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter

    from lifecycle_probe.config import Config
    from lifecycle_probe.rare_records import InitFailureRecord
    from lifecycle_probe.records import FunctionFacts, InvocationRecord
    from lifecycle_probe.sinks.otel.exporters import Exporter

__all__ = ["Pipeline"]

DEFAULT_OTLP_FILE = "lifecycle-probe.otlp.jsonl"
# The time an export is given even when the exports before it used up the flush's.
MIN_EXPORT_S = 0.1


class Pipeline:
    """Spans and metrics of invocation records, and the channels that export them."""

    def __init__(
        self,
        config: Config,
        function: FunctionFacts,
        exporters: Sequence[str],
        span_exporter: SpanExporter | None = None,
        metric_exporter: MetricExporter | None = None,
        exporter: Exporter | None = None,
    ) -> None:
        attributes = function_resource(function)
        names = scope()
        started_ns = time.time_ns()
        self._channels: list[Channel] = []
        if span_exporter is not None or metric_exporter is not None:
            from lifecycle_probe.sinks.otel.sdk_bridge import SdkExporter

            bridge = SdkExporter(span_exporter, metric_exporter, attributes, names)
            self._channels.append(Channel(bridge, Metrics(started_ns)))
        if exporter is not None:
            self._channels.append(Channel(exporter, Metrics(started_ns)))
        # The OTLP file first: a local write takes microseconds, a collector that hangs
        # takes the whole flush budget, after which the environment may be frozen and
        # reaped before the file's turn comes (the soak lost file records that way).
        for name in sorted(exporters, key=lambda name: name != "otlp-file"):
            try:
                exporter = _exporter(name, config, attributes, names)
            except Exception as exc:
                # One destination that cannot be set up (an OTLP file in a read-only
                # directory, an endpoint that is not a URL) must not take the others down.
                report_failure(f"OpenTelemetry exporter {name}", exc)
                continue
            self._channels.append(Channel(exporter, Metrics(started_ns)))
        # Lifecycle spans are recorded whatever X-Ray's sampling decision for the request:
        # the trace id is continued, the sampling is ours (OTEL_TRACES_SAMPLER overrides).
        self._spans = Spans(int(config.import_min_ms * 1_000_000), env_sampler())

    @property
    def dropped_spans(self) -> int:
        return sum(channel.dropped_spans for channel in self._channels)

    # -- records to telemetry --------------------------------------------------------------

    def take(
        self,
        records: Sequence[InvocationRecord],
        failures: Sequence[InitFailureRecord] = (),
        drops: int = 0,
    ) -> None:
        """What a drain of the sink hands over: ``drops`` records it gave up (its queue
        was full), then the spans and points of ``records`` and ``failures``, each built
        behind its own guard (one that cannot be built is counted, the rest go on)."""
        if drops:
            self.count_dropped(drops, QUEUE_FULL)
        # The process's peak RSS (faas.mem_usage), read once for all the records of a
        # drain: a high-water mark, which the microseconds between them do not move.
        peak = _peak_rss_bytes() if records else None
        for record in records:
            try:
                self.emit(record, peak)
            except Exception as exc:
                report_failure("OpenTelemetry span/metric building", exc)
                self.count_dropped(1, BUILD_FAILED)
        for failure in failures:
            try:
                self.emit_init_failure(failure)
            except Exception as exc:
                report_failure("OpenTelemetry span/metric building", exc)

    def emit(self, record: InvocationRecord, peak_rss: int | None = None) -> None:
        """Spans and metric points of one finished invocation, kept for the next flush;
        ``peak_rss`` is the process's peak RSS when the caller read it already.

        What cannot be built (a bug, a record that breaks an assumption) is counted as
        dropped (``build_failed``) for that signal; the other still goes out. Lambda's
        reports given up before this export (``platform_evicted``) are counted as dropped
        here, once each, whatever else of the record could be built.
        """
        spans: list[Span] | None = None
        invocation_span: tuple[int, int, bool] | None = None
        try:
            spans, invocation_span = self._spans.of(record)
        except Exception as exc:
            report_failure("OpenTelemetry span building", exc)
        rss = _peak_rss_bytes() if peak_rss is None else peak_rss
        for channel in self._channels:
            if record.platform_evicted:
                channel.count_dropped(
                    record.platform_evicted, PLATFORM_FIGURES_EVICTED, ("spans", "metrics")
                )
            if spans is None:
                channel.count_dropped(1, BUILD_FAILED, ("spans",))
            else:
                channel.keep(spans)
            if channel.takes_metrics:
                try:
                    channel.metrics.record(record, invocation_span, rss)
                except Exception as exc:
                    report_failure("OpenTelemetry metric recording", exc)
                    channel.count_dropped(1, BUILD_FAILED, ("metrics",))

    def emit_init_failure(self, failure: InitFailureRecord) -> None:
        """The spans and the ``faas.init_errors`` point of a failed INIT, kept for the next
        flush."""
        spans = self._spans.of_init_failure(failure)
        for channel in self._channels:
            channel.keep(spans)
            if channel.takes_metrics:
                channel.metrics.record_init_failure(failure)

    def count_dropped(self, invocations: int, reason: str) -> None:
        """Count ``invocations`` the sink gave up before they reached the pipeline (both
        their spans and their metric points) in every destination."""
        for channel in self._channels:
            channel.count_dropped(invocations, reason, ("spans", "metrics"))

    # -- flushing ---------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Export what every channel holds. True when all of it was taken.

        An expired request (no time left) exports nothing: what waits goes with the next
        flush. Otherwise every channel, and in it spans and then metrics, gets its
        attempt even after the time is up (at least ``MIN_EXPORT_S`` each): one slow or
        failing destination must not starve the others. A destination that timed out is
        not tried again until its backoff has passed: what it holds waits for then. The
        caller's wait is bounded by the sink (its own thread), and each OTLP/HTTP request
        by the time it is given.
        """
        if timeout_s <= 0:
            return False
        deadline = time.monotonic() + timeout_s
        ok = True
        for channel in self._channels:
            # A destination resting after a timeout (channels.Backoff) is skipped at once.
            ok = channel.export(deadline, MIN_EXPORT_S) and ok
        return ok

    def flush_by(self, deadline: float) -> bool:
        """:meth:`flush` with the time given as a deadline (monotonic), as a drain of the
        sink has it: one clock read, where the timeout's conversion back took two."""
        if deadline <= time.monotonic():
            return False
        ok = True
        for channel in self._channels:
            ok = channel.export(deadline, MIN_EXPORT_S) and ok
        return ok

    def shutdown(self) -> None:
        for channel in self._channels:
            channel.shutdown()

    def abandon(self) -> None:
        """In a forked child: let go of the parent's pipeline without exporting, closing
        only the child's copies of the destinations' descriptors."""
        for channel in self._channels:
            try:
                channel.exporter.abandon()
            except Exception:  # the child goes on with a pipeline of its own
                pass


def _exporter(
    name: str, config: Config, attributes: dict[str, object], names: tuple[str, str]
) -> Exporter:
    """The destination ``name`` (``otlp-file`` or ``otlp``) of the configuration."""
    from lifecycle_probe.sinks.otel.exporters import OtlpFileExporter, OtlpHttpExporter

    if name == "otlp-file":
        path = config.otlp_file
        if path is None:
            path = DEFAULT_OTLP_FILE
            warn_once(
                "otlp-file:no-path",
                "lifecycle_probe: LIFECYCLE_PROBE_OTLP_FILE is not set; writing %s",
                path,
            )
        return OtlpFileExporter(attributes, names, path)
    # The endpoints come from OTEL_EXPORTER_OTLP_*, read once, here; the collector layer
    # listens on localhost:4318.
    return OtlpHttpExporter(attributes, names)


def _peak_rss_bytes() -> int | None:
    try:
        return getrusage(RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    except Exception:
        return None
