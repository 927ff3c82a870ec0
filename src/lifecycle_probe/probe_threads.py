"""The probe's own threads and work: what they import or connect to is not the function's.

The internal extension's thread and the OpenTelemetry sink's export thread are the
probe's own: their connections (to the collector) are never reported as stale, their
imports (the SDK) never appear in the function's import tree, their log lines never in
the function's logs. Work the probe does on the function's threads (building sinks,
running a post-import hook) is marked for its duration with :class:`probe_work`.

Capture (the import tracer, connection tracking) and sinks both read this registry; it
imports nothing of either, so that neither depends on the other through it.
"""

from __future__ import annotations

import _thread

__all__ = ["OUTSIDE", "in_probe_work", "mark_probe_thread", "probe_work", "work_depth"]

# How deep the calling thread is in ``probe_work`` blocks: a one-item list per thread,
# made at its first block, its count changed in place. Each access to a thread-local
# attribute looks up the thread's own namespace (~70 ns): a plain count took two at each
# enter and exit, the list takes one, and every sync export goes through a block.
# A thread-local dies with its thread: a mark never passes to a later thread that is
# given the same ident (a set of idents did, and hid that thread's imports and
# connections once a probe thread had ended). It is read through the thread's own dict,
# ``work_depth.__dict__.get("depth", OUTSIDE)``: ``getattr`` with a default makes and
# drops an AttributeError on every thread that never entered a block (~1 us; the import
# tracer, which reads it inline on every import of INIT, spent a fifth of its time there).
work_depth = _thread._local()
OUTSIDE = (0,)
# A marked thread's count: no block's exit brings it down to 0.
_FOR_LIFE = 1 << 40


def mark_probe_thread() -> None:
    """Declare the calling thread the probe's own, for the rest of its life."""
    try:
        work_depth.depth[0] += _FOR_LIFE
    except AttributeError:  # the thread's first mark or block
        work_depth.depth = [_FOR_LIFE]


def in_probe_work() -> bool:
    """Whether the calling thread is doing the probe's work (its own thread, or a block)."""
    return bool(work_depth.__dict__.get("depth", OUTSIDE)[0] > 0)


class probe_work:
    """Imports inside this block are the probe's own and are not recorded."""

    __slots__ = ()

    def __enter__(self) -> None:
        try:
            work_depth.depth[0] += 1
        except AttributeError:  # the thread's first block
            work_depth.depth = [1]

    def __exit__(self, *exc_info: object) -> None:
        depth = work_depth.__dict__.get("depth")
        # (never below 0: an exit without its enter must not hide the next block's end)
        if depth is not None and depth[0] > 0:
            depth[0] -= 1
