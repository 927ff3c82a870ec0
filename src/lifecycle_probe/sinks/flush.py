"""Which flush a sink gets: after the response (internal extension) or before it (sync).

``LIFECYCLE_PROBE_FLUSH=after-response`` asks for the extension; where it cannot be had
(outside Lambda, or the probe set up after INIT) the sink flushes before the handler
returns, bounded by ``LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS`` and the remaining time. Whether
it can be had is the capture side's to say (it knows the environment): the sinks are
handed the extension, or None.
"""

from __future__ import annotations

import _thread
import os

from lifecycle_probe._safe import report_failure, warn_once
from lifecycle_probe.probe_threads import probe_work
from lifecycle_probe.sinks import Sink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from lifecycle_probe.extension import InternalExtension
    from lifecycle_probe.records import InvocationRecord
    from lifecycle_probe.sinks.otel import OtelSink

    Flushed = TypeVar("Flushed", bound="OtelSink | BufferedSink")

__all__ = ["MAX_BUFFERED", "BufferedSink", "attach_flushing", "before_drains"]

# Records a buffered sink keeps while nothing drains it (an extension that stopped).
MAX_BUFFERED = 1000

# Bumped in a forked child: a buffered sink then drops what its parent had queued. One
# hook for all sinks, so that the hot path compares two ints instead of asking getpid().
_generation = 0


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


# Run first at every after-response flush, before any sink drains: work the caller left
# for after the response (the decorator's records of invocations that just ended).
before_drains: list[Callable[[], object]] = []
_extensions_hooked: list[InternalExtension] = []


def _run_before_drains(timeout_s: float) -> None:
    for run in list(before_drains):
        try:
            run()
        except Exception as exc:
            report_failure("after-response record", exc)


def attach_flushing(sink: Flushed, extension: InternalExtension | None) -> Flushed:
    """Give ``sink`` its flush: ``extension``'s after the response, or (None) its own sync one."""
    if extension is not None:
        if extension not in _extensions_hooked:
            _extensions_hooked.append(extension)
            extension.add_flush(_run_before_drains)  # before the first sink's drain
        sink.extension = extension
        extension.add_flush(sink.drain)
    return sink


class BufferedSink(Sink):
    """A sink that writes locally (standard output) after the response when it can.

    ``export`` runs on the caller's path: it keeps what :meth:`prepare` decides there and
    queues it. The queue is written by :meth:`write` from the internal extension after the
    response or, with no extension registered, at once.
    """

    def __init__(self) -> None:
        self.extension: InternalExtension | None = None
        # A list: append and pop(0) are each one C call, atomic under the GIL, so it is
        # thread-safe without a lock of ours (nothing waits on it: it needs no queue).
        self._queue: list[Any] = []
        self._generation = _generation
        self._dropped = 0
        self._dropped_lock = _thread.allocate_lock()

    def prepare(self, record: InvocationRecord) -> Any:
        """What must be decided on the caller's path, before the response (the record)."""
        return record

    def write(self, item: Any) -> None:
        """Write one prepared item."""
        raise NotImplementedError

    def counted_in(self, item: Any) -> int:
        """What else a prepared item would have counted as given up, lost with it when
        the queue drops it (none here; the EMF sink's Lambda reports given up)."""
        return 0

    def export(self, record: InvocationRecord) -> None:
        item = self.prepare(record)
        if self._generation != _generation:
            # A forked child: what the parent queued is the parent's to write.
            self._generation, self._queue = _generation, []
        queue = self._queue
        queue.append(item)
        if len(queue) > MAX_BUFFERED:
            self._drop_oldest()
        extension = self.extension
        if extension is None or not extension.registered:
            self.drain(0.0)

    def _drop_oldest(self) -> None:
        # Nothing drains the queue (an extension that stopped): the oldest goes, counted.
        try:
            item = self._queue.pop(0)
        except IndexError:
            return
        lost = 1 + self.counted_in(item)
        with self._dropped_lock:
            self._dropped += lost
        warn_once(
            f"{self.name}:dropped",
            "lifecycle_probe: the %s sink's queue is full (%d records not written yet); "
            "the oldest are dropped and counted",
            self.name,
            MAX_BUFFERED,
        )

    def take_dropped(self) -> int:
        """Records dropped since the last call."""
        with self._dropped_lock:
            dropped, self._dropped = self._dropped, 0
        return dropped

    def drain(self, timeout_s: float) -> bool:
        """Write everything queued (local writes: the bound is not needed to stop a hang)."""
        queue = self._queue
        if not queue:
            return True
        # What a write imports (Powertools, at the first EMF document) is the probe's, not
        # the function's: on the caller's thread when flushing before the response.
        with probe_work():
            while True:
                try:
                    item = queue.pop(0)
                except IndexError:
                    return True
                try:
                    self.write(item)
                except Exception as exc:
                    report_failure(f"{self.name} sink", exc)

    def flush(self, timeout_s: float) -> None:
        self.drain(timeout_s)
