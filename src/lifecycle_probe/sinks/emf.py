"""The ``emf`` sink: CloudWatch metrics as Embedded Metric Format, through Powertools.

One EMF document per invocation on standard output, which Lambda ships to CloudWatch
Logs, where CloudWatch turns it into metrics. The documents are built and validated by
Powertools' own EMF provider (the same code as ``Metrics.log_metrics``), with a provider
of the probe's own, so nothing is mixed into the metrics a function adds through its
``Metrics`` object. Powertools is imported at the first write, after the response where
the internal extension runs: never at INIT.

The metric table (:data:`METRICS`) is the public contract: README "CloudWatch metrics
(EMF)" documents it, and the SAM template's dashboard is built from it.

**ColdStart is never counted twice.** Powertools' ``log_metrics(capture_cold_start_metric=
True)`` writes a ``ColdStart`` of its own. Where it would land on the same metric as the
probe's (the same namespace, function name and service), the first of the two to write it
does and the other does not (:mod:`lifecycle_probe.coldstart`).
"""

from __future__ import annotations

import _thread
import os
import sys

from lifecycle_probe.probe_threads import probe_work
from lifecycle_probe.records import (
    COLD,
    CONNECTION_OUTCOME,
    DETECTED,
    ERROR,
    FAILED,
    HAZARD_EVENT,
    LEAK_EVENT,
    MEMORY_EVENT,
    PROACTIVE,
    PROVISIONED,
    RESTORED,
    RISK,
    STALE_EVENT,
    TIMEOUT,
    TMP_EVENT,
    WARM,
)
from lifecycle_probe.sinks.flush import BufferedSink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from lifecycle_probe.config import Config
    from lifecycle_probe.rare_records import InitFailureRecord
    from lifecycle_probe.records import FunctionFacts, InvocationRecord

__all__ = ["METRICS", "EmfSink"]

COUNT = "Count"
MILLISECONDS = "Milliseconds"
BYTES = "Bytes"
MEGABYTES = "Megabytes"

# Metric name -> (unit, when it is emitted). Every metric carries the dimensions
# ``function_name`` and, when a service is configured, ``service``.
METRICS: dict[str, tuple[str, str]] = {
    "Invocations": (COUNT, "1 on every invocation"),
    "ColdStart": (
        COUNT,
        "1 on a cold or restored start (Powertools' semantics; not when Powertools already "
        "counted it in the same namespace and service)",
    ),
    "StartCold": (COUNT, "1 on a cold start"),
    "StartWarm": (COUNT, "1 on a warm start"),
    "StartProvisioned": (COUNT, "1 on a provisioned-concurrency start"),
    "StartProactive": (COUNT, "1 on a proactive start"),
    "StartRestored": (COUNT, "1 on a SnapStart restore"),
    "InitDuration": (
        MILLISECONDS,
        "INIT duration, on the first invocation of an environment (after a SnapStart "
        "restore: the INIT before the snapshot)",
    ),
    "RestoreDuration": (
        MILLISECONDS,
        "SnapStart restore duration as the probe measured it, on the first invocation after "
        "a restore",
    ),
    "InvocationSeq": (COUNT, "the invocation's sequence number in its environment"),
    "IdleDuration": (MILLISECONDS, "time frozen since the previous invocation (warm only)"),
    "InvokeDuration": (MILLISECONDS, "handler duration as the probe saw it"),
    "Errors": (COUNT, "1 when the handler raised, else 0"),
    "Timeouts": (COUNT, "1 when the invocation timed out, else 0"),
    "StaleConnectionFailed": (COUNT, "stale connections reused that failed"),
    "StaleConnectionDetected": (COUNT, "stale connections found dead and replaced"),
    "StaleConnectionRisk": (COUNT, "connections reused after a long idle that worked"),
    "GlobalLeaks": (COUNT, "module globals rebound to request state"),
    "TmpUsed": (BYTES, "bytes used in /tmp at the invocation's end"),
    "TmpGrowth": (
        BYTES,
        "change of TmpUsed since the previous invocation of the environment (warm only; "
        "negative when files were removed)",
    ),
    "TmpWarnings": (
        COUNT,
        "1 when the environment's /tmp use first crossed the warning share of its ephemeral "
        "storage",
    ),
    "MemoryRss": (BYTES, "resident memory after the invocation (/proc/self/statm)"),
    "MemoryGrowthWarnings": (
        COUNT,
        "1 when steady memory growth across warm invocations was first found in the environment",
    ),
    "SnapStartHazards": (
        COUNT,
        "state captured in the SnapStart snapshot (connections, random values, timestamps, "
        "credentials), on the first invocation after a restore",
    ),
    "InitErrors": (COUNT, "1 for a failed INIT (written before the runtime exits)"),
    # Lambda's own figures (Telemetry API), in the export they reach: usually the next
    # invocation's, one value per request reported.
    "BilledDuration": (MILLISECONDS, "Lambda's billed duration of a reported request"),
    "MaxMemoryUsed": (MEGABYTES, "Lambda's peak memory of a reported request"),
    "PlatformInitDuration": (
        MILLISECONDS,
        "Lambda's INIT duration, reported with the first request after an INIT",
    ),
    "PlatformRestoreDuration": (
        MILLISECONDS,
        "Lambda's SnapStart restore duration, reported with the first request after a restore",
    ),
    "InitDisagreements": (
        COUNT,
        "1 when Lambda's INIT duration and the probe's differ by more than the tolerance",
    ),
    "TelemetryDropped": (
        COUNT,
        "records the probe gave up before writing them, and Lambda's reports (Telemetry API) "
        "given up before an export took them, counted in the next document",
    ),
}

START_METRICS = {
    COLD: "StartCold",
    WARM: "StartWarm",
    PROVISIONED: "StartProvisioned",
    PROACTIVE: "StartProactive",
    RESTORED: "StartRestored",
}
STALE_METRICS = {
    FAILED: "StaleConnectionFailed",
    DETECTED: "StaleConnectionDetected",
    RISK: "StaleConnectionRisk",
}
# Events counted, one each, in a metric of their own.
EVENT_METRICS = {
    HAZARD_EVENT: "SnapStartHazards",
    TMP_EVENT: "TmpWarnings",
    MEMORY_EVENT: "MemoryGrowthWarnings",
}

# Where the function name is unknown (outside Lambda): a dimension value may not be empty.
LOCAL_FUNCTION_NAME = "local"


def _missing_powertools(exc: ImportError) -> None:
    from lifecycle_probe._safe import warn_once

    warn_once(
        "emf:no-powertools",
        "lifecycle_probe: the emf exporter needs aws-lambda-powertools (%s); "
        "install it (pip install aws-lambda-powertools, or the Powertools layer): "
        "EMF metrics are dropped until then, the function is unaffected",
        exc,
    )


class EmfSink(BufferedSink):
    """Writes one EMF document per invocation (and one per failed INIT) on stdout."""

    name = "emf"
    reads_event = False

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.namespace = config.namespace
        self.service = config.service
        self.resolution = 1 if config.emf_high_resolution else 60
        self._cached_provider: Any = None
        self._write_lock = _thread.allocate_lock()

    def prepare(self, record: InvocationRecord) -> Any:
        # On the caller's path, before Powertools' own wrapper (if any) adds its cold start.
        return record, self._claims_cold_start(record)

    def counted_in(self, item: Any) -> int:
        # Lambda's reports given up before this record's export: TelemetryDropped of its
        # document, to be counted in the next one instead.
        record: InvocationRecord = item[0]
        return record.platform_evicted

    def _claims_cold_start(self, record: InvocationRecord) -> bool:
        facts = record.facts
        if not facts.coldstart:
            return False
        # Imported at the first cold start to export, not at INIT (an environment's first
        # record, after the response when the internal extension flushes then): the
        # probe's import, also where it happens on the caller's thread.
        with probe_work():
            from lifecycle_probe.coldstart import count_once

        function_name = record.function.function_name or LOCAL_FUNCTION_NAME
        return count_once(self.namespace, function_name, self.service, facts.environment_id)

    def _provider(self, function: FunctionFacts) -> Any:
        """Powertools' EMF provider for this function, emptied of the last document.

        One per sink, reused: building one validates every unit and resolution anew
        (about a third of a document's cost). Writes are serialised by ``_write_lock``.
        """
        provider = self._cached_provider
        name = function.function_name or LOCAL_FUNCTION_NAME
        if provider is None or provider.dimension_set.get("function_name") != name:
            from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
                AmazonCloudWatchEMFProvider,
            )

            # An empty service (not None) keeps Powertools from reading its own variable:
            # the probe's configuration has decided already.
            provider = AmazonCloudWatchEMFProvider(
                namespace=self.namespace, service=self.service or ""
            )
            provider.add_dimension("function_name", name)
            if self.service:
                provider.add_dimension("service", self.service)
            # Every name, unit and resolution of the table through Powertools' checks,
            # once: documents then fill the metric set directly (its add_metric checks
            # and logs each metric anew, ~4 us each, most of a document's cost).
            for metric, (unit, _) in METRICS.items():
                provider.add_metric(metric, unit, 0, self.resolution)
            self._cached_provider = provider
        provider.metric_set.clear()
        provider.metadata_set.clear()
        return provider

    def _adder(self, provider: Any) -> Callable[[str, float], None]:
        """Adds a metric of the table to ``provider``'s metric set, as its add_metric would."""
        metric_set = provider.metric_set
        resolution = self.resolution

        def add(name: str, value: float) -> None:
            unit = METRICS[name][0]
            entry = metric_set.get(name)
            if entry is not None:
                # A second value of one metric in one document (two requests' reports):
                # EMF takes a list of values, as Powertools' own add_metric makes it.
                entry["Value"].append(float(value))
                return
            metric_set[name] = {
                "Unit": unit,
                "StorageResolution": resolution,
                "Value": [float(value)],
            }

        return add

    def _disabled(self) -> bool:
        from aws_lambda_powertools.metrics.functions import is_metrics_disabled

        # POWERTOOLS_METRICS_DISABLED / POWERTOOLS_DEV: the user's switch for EMF output.
        try:
            return bool(is_metrics_disabled())
        except ValueError as exc:  # Powertools' strtobool on a value it cannot read
            from lifecycle_probe._safe import warn_once

            warn_once(
                "emf:disabled-variable",
                "lifecycle_probe: POWERTOOLS_METRICS_DISABLED=%r / POWERTOOLS_DEV=%r is not "
                "valid (%s); EMF stays on",
                os.environ.get("POWERTOOLS_METRICS_DISABLED"),
                os.environ.get("POWERTOOLS_DEV"),
                exc,
            )
            return False

    def document(self, record: InvocationRecord, counts_cold_start: bool) -> dict[str, Any]:
        """The EMF document of one invocation."""
        facts = record.facts
        provider = self._provider(record.function)
        add = self._adder(provider)
        add("Invocations", 1)
        if counts_cold_start:
            add("ColdStart", 1)
        start_metric = START_METRICS.get(facts.start or "")
        if start_metric is not None:
            add(start_metric, 1)
        init = record.init
        if init is not None:
            add("InitDuration", init.duration_s * 1000)
        add("InvocationSeq", facts.invocation_seq)
        if facts.idle_s is not None:
            add("IdleDuration", facts.idle_s * 1000)
        add("InvokeDuration", max(0.0, record.duration_s * 1000))
        add("Errors", 1 if record.outcome == ERROR else 0)
        add("Timeouts", 1 if record.outcome == TIMEOUT else 0)
        stale: dict[str, int] = {}
        leaks = 0
        for event in record.events:
            if event.name == STALE_EVENT:
                outcome = dict(event.attributes).get(CONNECTION_OUTCOME)
                metric = STALE_METRICS.get(str(outcome))
                if metric is not None:
                    stale[metric] = stale.get(metric, 0) + 1
            elif event.name == LEAK_EVENT:
                leaks += 1
            elif event.name in EVENT_METRICS:
                metric = EVENT_METRICS[event.name]
                stale[metric] = stale.get(metric, 0) + 1
        for metric, count in stale.items():
            add(metric, count)
        if leaks:
            add("GlobalLeaks", leaks)
        if record.tmp_used_bytes is not None:
            add("TmpUsed", record.tmp_used_bytes)
        if record.tmp_growth_bytes is not None:
            add("TmpGrowth", record.tmp_growth_bytes)
        if record.rss_bytes is not None:
            add("MemoryRss", record.rss_bytes)
        if record.restore is not None:
            add("RestoreDuration", record.restore.duration_s * 1000)
        for figures in record.platform:
            reported: tuple[tuple[str, float | None], ...] = (
                ("BilledDuration", figures.billed_duration_ms),
                ("MaxMemoryUsed", figures.max_memory_used_mb),
                ("PlatformInitDuration", figures.init_duration_ms),
                ("PlatformRestoreDuration", figures.restore_duration_ms),
            )
            for metric, figure in reported:
                if figure is not None:
                    add(metric, figure)
        if record.init_disagreements:
            add("InitDisagreements", len(record.init_disagreements))
        if record.platform_evicted:
            add("TelemetryDropped", record.platform_evicted)
        # Searchable in Logs Insights beside the metrics; never a payload or a secret.
        metadata = {
            "lifecycle_probe": "metrics",
            "function_request_id": facts.request_id,
            "lifecycle_environment_id": facts.environment_id,
            "lifecycle_invocation_seq": facts.invocation_seq,
            "lifecycle_start": facts.start,
            "lifecycle_init_type": facts.init_type,
            "lifecycle_outcome": record.outcome,
        }
        for key, value in metadata.items():
            if value is not None:
                provider.metadata_set[key] = value
        # Set directly: Powertools' set_timestamp checks CloudWatch's window, and the end of
        # an invocation that just finished is inside it.
        provider.timestamp = record.end_ns // 1_000_000
        document: dict[str, Any] = provider.serialize_metric_set()
        return document

    def failure_document(self, failure: InitFailureRecord) -> dict[str, Any]:
        """The EMF document of a failed INIT."""
        provider = self._provider(failure.function)
        self._adder(provider)("InitErrors", 1)
        provider.metadata_set.update(
            lifecycle_probe="metrics",
            error_type=failure.error_type,
            lifecycle_environment_id=failure.environment_id,
            lifecycle_init_type=failure.init_type,
        )
        provider.timestamp = failure.end_ns // 1_000_000
        document: dict[str, Any] = provider.serialize_metric_set()
        return document

    def write(self, item: Any) -> None:
        record, counts_cold_start = item
        # A timeout is written while the handler still runs (and may be printing): start
        # on a line of its own, or CloudWatch would read neither line.
        fresh_line = record.outcome == TIMEOUT
        self._write(lambda: self.document(record, counts_cold_start), fresh_line)

    def export_init_failure(self, failure: InitFailureRecord, timeout_s: float) -> None:
        # Local work (Powertools' import, a line on stdout): nothing here can hang.
        self._write(lambda: self.failure_document(failure), fresh_line=False)

    def _write(self, build: Callable[[], dict[str, Any]], fresh_line: bool) -> None:
        # One writer at a time: the provider is reused, and two threads importing
        # Powertools at once would see it half-imported.
        with self._write_lock:
            try:
                if self._disabled():
                    return
                document = build()
            except ModuleNotFoundError as exc:
                _missing_powertools(exc)
                return
            dropped = self.take_dropped()
            if dropped:
                document = self._with_dropped(document, dropped)
            _print(document, fresh_line)

    def _with_dropped(self, document: dict[str, Any], dropped: int) -> dict[str, Any]:
        # The records the queue gave up (nothing drained it) are counted in the next
        # document: lost, but never silently.
        counted = document.get("TelemetryDropped")
        if counted is not None:
            # Lambda's reports given up, counted by the document already: one value, the
            # sum (the metric is declared once per document).
            document["TelemetryDropped"] = [float(sum(counted) + dropped)]
            return document
        document["_aws"]["CloudWatchMetrics"][0]["Metrics"].append(
            {"Name": "TelemetryDropped", "Unit": COUNT}
            | ({"StorageResolution": 1} if self.resolution == 1 else {})
        )
        document["TelemetryDropped"] = [float(dropped)]
        return document


def _print(document: dict[str, Any], fresh_line: bool = False) -> None:
    import json

    # One line, as Powertools prints it: CloudWatch reads one EMF document per log event.
    text = json.dumps(document, separators=(",", ":")) + "\n"
    sys.stdout.write("\n" + text if fresh_line else text)
    sys.stdout.flush()
