"""What invoked the function, from the event's shape; and the trace context it carries.

Only the shape of the event is read (which keys exist, the event source name), never its
content: no payload, header value or identity leaves this module, except the W3C trace
context headers (``traceparent``/``tracestate``), which exist to be propagated.
"""

from __future__ import annotations

from lifecycle_probe.records import OTHER_TRIGGER as OTHER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DATASOURCE", "HTTP", "OTHER", "PUBSUB", "TIMER", "trigger_of", "w3c_context_of"]

# OpenTelemetry's faas.trigger values.
HTTP = "http"
PUBSUB = "pubsub"
DATASOURCE = "datasource"
TIMER = "timer"

# ``eventSource`` of a record in ``Records`` (or of a Kafka or Amazon MQ event) -> trigger.
_RECORD_SOURCES = {
    "aws:sqs": PUBSUB,
    "aws:sns": PUBSUB,
    "aws:kinesis": PUBSUB,
    "aws:kafka": PUBSUB,
    "selfmanagedkafka": PUBSUB,
    "aws:mq": PUBSUB,
    "aws:rmq": PUBSUB,
    "aws:dynamodb": DATASOURCE,
    "aws:s3": DATASOURCE,
}


def trigger_of(event: Any) -> str:
    """``faas.trigger`` for a Lambda event: http, pubsub, datasource, timer or other."""
    if not isinstance(event, dict):
        return OTHER
    context = event.get("requestContext")
    if isinstance(context, dict) and (
        "http" in context or "httpMethod" in context or "elb" in context
    ):
        return HTTP  # API Gateway v1/v2, function URL, ALB
    if "httpMethod" in event and "headers" in event:
        return HTTP  # API Gateway REST (v1) events without a full requestContext
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        source = records[0].get("eventSource") or records[0].get("EventSource")
        if isinstance(source, str):
            return _RECORD_SOURCES.get(source.lower(), OTHER)
        return OTHER
    source = event.get("eventSource")
    if isinstance(source, str) and (
        isinstance(event.get("records"), dict)  # MSK, self-managed Kafka
        or isinstance(event.get("messages"), list)  # Amazon MQ for ActiveMQ
        or isinstance(event.get("rmqMessagesByQueue"), dict)  # Amazon MQ for RabbitMQ
    ):
        return _RECORD_SOURCES.get(source.lower(), PUBSUB)
    if "detail-type" in event and "source" in event:
        # EventBridge; its schedules (and CloudWatch Events rules) are timers.
        return TIMER if event.get("detail-type") == "Scheduled Event" else PUBSUB
    return OTHER


def w3c_context_of(event: Any) -> tuple[str | None, str | None]:
    """``traceparent`` and ``tracestate`` from an HTTP event's headers, if it has them."""
    if not isinstance(event, dict):
        return None, None
    headers = event.get("headers")
    if not isinstance(headers, dict) or not headers:
        multi = event.get("multiValueHeaders")  # ALB with multi-value headers on
        if not isinstance(multi, dict) or not multi:
            return None, None
        headers = {k: v[0] for k, v in multi.items() if isinstance(v, list) and v}
    traceparent = headers.get("traceparent")
    tracestate = headers.get("tracestate")
    if traceparent is None or tracestate is None:
        # HTTP header names are case-insensitive; API Gateway v1 keeps the caller's case.
        for name, value in headers.items():
            if isinstance(name, str):
                lowered = name.lower()
                if lowered == "traceparent" and traceparent is None:
                    traceparent = value
                elif lowered == "tracestate" and tracestate is None:
                    tracestate = value
    return (
        traceparent if isinstance(traceparent, str) else None,
        tracestate if isinstance(tracestate, str) else None,
    )
