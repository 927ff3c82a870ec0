"""Sinks: where finished records go. Each one only translates records; none captures.

A sink is built from the configured exporter names: ``console``, ``emf``, and one
OpenTelemetry sink for ``otlp`` and ``otlp-file`` together; the log sink (the INIT report
and timeout lines) goes with all of them.
"""

from __future__ import annotations

from lifecycle_probe._safe import report_failure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from lifecycle_probe.config import Config
    from lifecycle_probe.extension import InternalExtension
    from lifecycle_probe.rare_records import InitFailureRecord
    from lifecycle_probe.records import InvocationRecord

    # Hands the sinks the internal extension that flushes after the response (None where
    # there can be none): capture knows the environment, sinks only use what they are given.
    ExtensionSource = Callable[[], InternalExtension | None]

__all__ = [
    "Sink",
    "add_process_sink",
    "build_sinks",
    "export_init_failure_to",
    "export_to",
    "forget_built_sinks",
    "process_sinks",
    "remove_process_sink",
]


class Sink:
    """Base of every sink. ``export`` is called once per finished invocation."""

    name = "sink"
    # Whether the sink uses what is read from the event (its trigger, W3C trace context);
    # a probe whose sinks all say no skips reading it on every invocation.
    reads_event = True

    def export(self, record: InvocationRecord) -> None:
        """Hand over one finished invocation (with its INIT record on the first one)."""
        raise NotImplementedError

    def export_init_failure(self, failure: InitFailureRecord, timeout_s: float) -> None:
        """Deliver a failed INIT before the runtime exits, within ``timeout_s`` (no buffering:
        the process is about to end)."""
        return

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


# Sinks already built, by configuration: every probe with the same configuration shares
# them (a sink may own a thread, a file, a connection to a collector: one per handler
# decorated, or per ``probe(fn)`` call in a loop, would grow without bound).
_built: dict[Config, tuple[Sink, ...]] = {}


def forget_built_sinks() -> None:
    """Build new sinks from now on (for tests that simulate a new runtime process)."""
    _built.clear()


def build_sinks(config: Config, extension: ExtensionSource | None = None) -> tuple[Sink, ...]:
    """The sinks named by ``config.exporter``, in order, and the probe's log lines; the
    same objects for the same configuration.

    With ``flush="after-response"``, ``extension()`` is asked (once, if any sink is built)
    for the internal extension that flushes them; without one they flush synchronously.
    """
    if "none" in config.exporter:
        return ()
    built = _built.get(config)
    if built is None:
        built = _built[config] = _new_sinks(config, extension)
    return built


def _new_sinks(config: Config, extension_source: ExtensionSource | None) -> tuple[Sink, ...]:
    from lifecycle_probe.sinks.flush import attach_flushing

    extension = None
    if config.flush == "after-response" and extension_source is not None:
        extension = extension_source()
    sinks: list[Sink] = []
    otlp = [name for name in config.exporter if name in ("otlp", "otlp-file")]
    for name in config.exporter:
        if name == "console":
            from lifecycle_probe.sinks.console import ConsoleSink

            sinks.append(ConsoleSink())
        elif name == "emf":
            from lifecycle_probe.sinks.emf import EmfSink

            sinks.append(attach_flushing(EmfSink(config), extension))
        elif name == otlp[0]:  # one OpenTelemetry pipeline serves both OTLP exporters
            from lifecycle_probe.sinks.otel import OtelSink

            sinks.append(attach_flushing(OtelSink(config, otlp), extension))
    # The INIT report and timeout lines go with every exporter (README "Log lines"), after
    # the response when another sink has the internal extension: never an extension (a
    # thread Lambda waits for at every invocation) for a few lines of their own.
    from lifecycle_probe.sinks.log import LogSink

    log = LogSink(config)
    if any(getattr(sink, "extension", None) is not None for sink in sinks):
        log = attach_flushing(log, extension)
    sinks.append(log)
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


def export_init_failure_to(
    sinks: tuple[Sink, ...], failure: InitFailureRecord, timeout_s: float
) -> None:
    """Hand a failed INIT to ``sinks`` and the process sinks, all within ``timeout_s``.

    Each sink gets what is left of the one bound, behind its own guard: the runtime
    reports the error and exits right after, and must not wait longer than the bound.
    """
    import time

    if process_sinks:
        sinks = sinks + tuple(process_sinks)
    deadline = time.monotonic() + timeout_s
    for sink in sinks:
        try:
            sink.export_init_failure(failure, max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            report_failure(f"{sink.name} sink", exc)
