"""Which flush a sink gets: after the response (internal extension) or before it (sync).

``LIFECYCLE_PROBE_FLUSH=after-response`` asks for the extension; where it cannot be had
(outside Lambda, or the probe set up after INIT) the sink flushes before the handler
returns, bounded by ``LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS`` and the remaining time.
"""

from __future__ import annotations

from lifecycle_probe.environment import current_environment
from lifecycle_probe.records import SOURCE_RUNTIME

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lifecycle_probe.config import Config
    from lifecycle_probe.sinks.otel import OtelSink


def attach_flushing(sink: OtelSink, config: Config) -> OtelSink:
    """Give ``sink`` its flush: the extension's after the response, or its own sync one."""
    if config.flush != "after-response":
        return sink
    from lifecycle_probe.extension import after_response_extension

    environment = current_environment()
    init_over = environment.seq > 0 or environment.init_end_source == SOURCE_RUNTIME
    extension = after_response_extension(config.flush_timeout_ms / 1000, init_over)
    if extension is not None:
        sink.extension = extension
        extension.add_flush(sink.drain)
    return sink
