"""Sinks: where finished records go. Each one only translates records; none captures.

A sink is built from the configured exporter names: ``console``, and one OpenTelemetry
sink for ``otlp`` and ``otlp-file`` together. ``emf`` arrives in a later release: naming
it is reported once and skipped, never raised.
"""

from __future__ import annotations

from lifecycle_probe._safe import report_failure, warn_once

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lifecycle_probe.config import Config
    from lifecycle_probe.records import InvocationRecord


class Sink:
    """Base of every sink. ``export`` is called once per finished invocation."""

    name = "sink"

    def export(self, record: InvocationRecord) -> None:
        """Hand over one finished invocation (with its INIT record on the first one)."""
        raise NotImplementedError

    def flush(self, timeout_s: float) -> None:
        """Push out anything buffered, within ``timeout_s``."""
        return

    def shutdown(self) -> None:
        """Release what the sink holds; it is not used again."""
        return


# Sinks every probe in the process exports to besides its own (``lifecycle_probe.testing``).
# Mutated in place only: the decorator holds a reference to this very list.
process_sinks: list[Sink] = []


def add_process_sink(sink: Sink) -> None:
    """Make every probe in this process also export to ``sink``."""
    process_sinks.append(sink)


def remove_process_sink(sink: Sink) -> None:
    """Undo :func:`add_process_sink` (no error if it was not added)."""
    if sink in process_sinks:
        process_sinks.remove(sink)


def build_sinks(config: Config) -> tuple[Sink, ...]:
    """The sinks named by ``config.exporter``, in order."""
    sinks: list[Sink] = []
    otlp = [name for name in config.exporter if name in ("otlp", "otlp-file")]
    for name in config.exporter:
        if name == "none":
            return ()
        if name == "console":
            from lifecycle_probe.sinks.console import ConsoleSink

            sinks.append(ConsoleSink())
        elif name in otlp:
            if name == otlp[0]:  # one OpenTelemetry pipeline serves both OTLP exporters
                from lifecycle_probe.sinks.flush import attach_flushing
                from lifecycle_probe.sinks.otel import OtelSink

                sinks.append(attach_flushing(OtelSink(config, otlp), config))
        else:
            warn_once(
                f"sink:unavailable:{name}",
                "lifecycle_probe: exporter %r is not available in this version; "
                "its records are dropped (available: otlp, otlp-file, console, none)",
                name,
            )
    return tuple(sinks)


def export_to(sinks: tuple[Sink, ...], record: InvocationRecord) -> None:
    """Export ``record`` to ``sinks`` and the process sinks, each behind its own guard."""
    if process_sinks:
        sinks = sinks + tuple(process_sinks)
    for sink in sinks:
        try:
            sink.export(record)
        except Exception as exc:
            report_failure(f"{sink.name} sink", exc)
