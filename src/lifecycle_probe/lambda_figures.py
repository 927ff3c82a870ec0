"""Lambda's own figures for the next export, and its INIT figure checked against the probe's.

The internal extension's Telemetry API subscription (:mod:`lifecycle_probe.telemetry_api`)
receives Lambda's ``platform.report`` of a request once that request is over, usually
during the next invocation (nothing is sent to a frozen environment). Each export takes
what has arrived since the previous one: every figure reaches exactly one export, naming
the request it belongs to. The figures of the last invocation before an environment ends
arrive after its last export and are never exported.

**When do the two INIT figures agree?** Within :data:`INIT_AGREEMENT_MS`. They measure the
same phase from two places. The probe's INIT starts at the runtime process's start, read
from the OS in clock ticks (10 ms; truncated, so up to one tick early), and ends at the
runtime's first request for work. Lambda's INIT starts as it launches the runtime (a
little before the process exists) and ends when the runtime *and every extension* have
asked for their next event: the probe's own extension asks a Telemetry API subscription
and a local HTTP round trip after the runtime. On Lambda that is a few milliseconds; a
loaded machine adds tens. 50 ms covers both and is still well under what a real
disagreement looks like: an external extension whose own INIT outlasts the runtime's, code
run before the runtime in the same sandbox that the probe cannot see, or a wrong INIT start
handed to the probe. An INIT the probe had to estimate (no exact signal at either end) is
not compared: its difference says nothing new.
"""

from __future__ import annotations

from lifecycle_probe.rare_records import InitDisagreement
from lifecycle_probe.records import SOURCE_ESTIMATED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lifecycle_probe.environment import Environment
    from lifecycle_probe.rare_records import PlatformFigures

__all__ = ["INIT_AGREEMENT_MS", "disagreements"]

# Lambda's INIT duration and the probe's agree within this (see the module's docstring).
INIT_AGREEMENT_MS = 50.0


def disagreements(
    figures: tuple[PlatformFigures, ...], environment: Environment
) -> tuple[InitDisagreement, ...]:
    """The INIT figures among ``figures`` that differ from the probe's INIT of
    ``environment`` by more than :data:`INIT_AGREEMENT_MS`.

    Lambda reports an INIT once, with the first request after it, and only that one is
    compared (see :meth:`~lifecycle_probe.telemetry_api.TelemetrySubscriber.
    init_comparable`), so this finds at most one per environment; a SnapStart environment
    compares the INIT before its snapshot, which is the one both Lambda and the probe
    report for it.
    """
    from lifecycle_probe.extension import active_extension

    extension = active_extension()
    telemetry = None if extension is None else extension.telemetry
    found = []
    for figure in figures:
        lambda_ms = figure.init_duration_ms
        if lambda_ms is None:
            continue
        # Only the INIT of the environment's first request, reported by Lambda as a
        # success in its init phase, is the start the probe measured (a failed INIT run
        # again inside an invocation is not).
        if telemetry is not None and not telemetry.init_comparable(figure.request_id):
            continue
        probe_ms = _probe_init_ms(environment)
        if probe_ms is not None and abs(lambda_ms - probe_ms) > INIT_AGREEMENT_MS:
            found.append(
                InitDisagreement(
                    request_id=figure.request_id,
                    lambda_init_duration_ms=lambda_ms,
                    probe_init_duration_ms=round(probe_ms, 3),
                )
            )
    return tuple(found)


def _probe_init_ms(environment: Environment) -> float | None:
    end_ns = environment.init_end_ns
    if end_ns is None or SOURCE_ESTIMATED in (
        environment.init_start_source,
        environment.init_end_source,
    ):
        return None
    return (end_ns - environment.init_start_ns) / 1e6
