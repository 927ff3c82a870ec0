"""The ``log`` lines that accompany every exporter: the INIT report, timeouts, disagreements.

On the first invocation of an environment, one INIT report (duration, init type, the
three slowest imports; after a SnapStart restore, the restore's duration too); one line
per timeout; one line for a failed INIT; one warning when Lambda's INIT figure and the
probe's disagree (Lambda reports an environment's INIT once: one line at most). Stale
connections and leaks are reported by their own capture code as they happen, through
the same :mod:`lifecycle_probe.loglines`. Written after the response where the internal
extension runs.
"""

from __future__ import annotations

from lifecycle_probe.records import TIMEOUT as TIMED_OUT
from lifecycle_probe.sinks.flush import BufferedSink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lifecycle_probe.config import Config
    from lifecycle_probe.rare_records import InitFailureRecord
    from lifecycle_probe.records import ImportRecord, InvocationRecord

__all__ = ["LogSink"]

SLOWEST_IMPORTS = 3
# The kind of the warning line written when Lambda's INIT figure and the probe's disagree.
INIT_DISAGREEMENT = "init_disagreement"


def slowest_imports(imports: tuple[ImportRecord, ...], count: int = SLOWEST_IMPORTS) -> list[Any]:
    """The ``count`` imports that took longest by themselves (nested imports excluded)."""
    ranked = sorted(imports, key=lambda r: r.self_ns, reverse=True)[:count]
    return [{"module": r.module, "self_ms": round(r.self_ns / 1e6, 3)} for r in ranked]


def _imports_text(slowest: list[Any]) -> str:
    return ", ".join(f"{i['module']} {i['self_ms']:.1f} ms" for i in slowest) or "none traced"


class LogSink(BufferedSink):
    """Writes the probe's INIT report and timeout lines (JSON or plain, as the function)."""

    name = "log"
    reads_event = False

    def __init__(self, config: Config) -> None:
        super().__init__()
        self._service = config.service
        if config.service:
            from lifecycle_probe.loglines import set_service

            set_service(config.service)

    def export(self, record: InvocationRecord) -> None:
        # Most invocations have nothing to say: skip the queue for them.
        if record.init is not None or record.outcome == TIMED_OUT or record.init_disagreements:
            super().export(record)

    def write(self, item: Any) -> None:
        # Imported at the first line (after the response), not at INIT.
        from lifecycle_probe.loglines import INFO, INIT_REPORT, TIMEOUT, WARNING, write_line

        record: InvocationRecord = item
        facts = record.facts
        common: dict[str, Any] = {
            "facts": facts,
            "function": record.function,
            "xray_header": record.xray_trace_header,
            "service": self._service,
            "arn": record.invoked_function_arn,
        }
        init = record.init
        if init is not None:
            slowest = slowest_imports(init.imports)
            duration_ms = round(init.duration_s * 1000, 3)
            estimated = " (estimated)" if init.estimated else ""
            fields: dict[str, Any] = {
                "init_duration_ms": duration_ms,
                "init_type": init.init_type,
                "init_estimated": init.estimated,
                "slowest_imports": slowest,
            }
            restore = record.restore
            restored = ""
            if restore is not None:
                fields["restore_duration_ms"] = round(restore.duration_s * 1000, 3)
                restored = f" before the snapshot, restore {fields['restore_duration_ms']:.1f} ms"
            write_line(
                INIT_REPORT,
                INFO,
                f"lifecycle_probe: INIT report: {duration_ms:.1f} ms{estimated}{restored}, "
                f"{init.init_type}, start {facts.start}; slowest imports: "
                f"{_imports_text(slowest)}",
                fields,
                time_ns=init.end_ns if restore is None else restore.end_ns,
                **common,
            )
        for disagreement in record.init_disagreements:
            write_line(
                INIT_DISAGREEMENT,
                WARNING,
                "lifecycle_probe: Lambda's INIT duration and the probe's disagree: Lambda "
                f"reported {disagreement.lambda_init_duration_ms:.1f} ms (request "
                f"{disagreement.request_id}), the probe measured "
                f"{disagreement.probe_init_duration_ms:.1f} ms from the runtime process's "
                "start to its first request for work. Lambda's figure also covers external "
                "extensions' INIT and whatever ran before the runtime process",
                {
                    "lambda_init_duration_ms": disagreement.lambda_init_duration_ms,
                    "probe_init_duration_ms": disagreement.probe_init_duration_ms,
                    "reported_request_id": disagreement.request_id,
                },
                time_ns=record.end_ns,
                **common,
            )
        if record.outcome == TIMED_OUT:
            write_line(
                TIMEOUT,
                WARNING,
                f"lifecycle_probe: invocation {facts.request_id} timed out after "
                f"{record.duration_s:.3f} s (invocation {facts.invocation_seq} of this "
                "environment)",
                {"duration_ms": round(record.duration_s * 1000, 3)},
                time_ns=record.end_ns,
                **common,
            )

    def export_init_failure(self, failure: InitFailureRecord, timeout_s: float) -> None:
        from lifecycle_probe.loglines import INIT_FAILURE, WARNING, write_line

        slowest = slowest_imports(failure.imports)
        duration_ms = round(failure.duration_s * 1000, 3)
        write_line(
            INIT_FAILURE,
            WARNING,
            f"lifecycle_probe: INIT failed with {failure.error_type} after {duration_ms:.1f} ms "
            f"({failure.init_type}, handler {failure.handler}); slowest imports: "
            f"{_imports_text(slowest)}",
            {
                "error_type": failure.error_type,
                "init_duration_ms": duration_ms,
                "init_type": failure.init_type,
                "handler": failure.handler,
                "slowest_imports": slowest,
                "lifecycle_environment_id": failure.environment_id,
            },
            facts=None,
            function=failure.function,
            xray_header=None,
            service=self._service,
            time_ns=failure.end_ns,
        )
