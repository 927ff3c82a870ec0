"""faas.trigger and W3C trace context, read from AWS's documented sample events.

The files under ``events/`` are the sample events of the AWS documentation (Lambda, API
Gateway, Cognito and EventBridge developer guides), one per event source, with the
documentation's example values.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lifecycle_probe.triggers import (
    DATASOURCE,
    HTTP,
    OTHER,
    PUBSUB,
    TIMER,
    trigger_of,
    w3c_context_of,
)

EVENTS = Path(__file__).parent / "events"

EXPECTED_TRIGGERS = {
    "alb.json": HTTP,
    "amazon_mq_activemq.json": PUBSUB,
    "amazon_mq_rabbitmq.json": PUBSUB,
    "apigateway_http_v2.json": HTTP,
    "apigateway_rest_v1.json": HTTP,
    "cloudwatch_logs.json": OTHER,
    "cognito_pre_sign_up.json": OTHER,
    "direct_invoke_custom.json": OTHER,
    "dynamodb_streams.json": DATASOURCE,
    "eventbridge_custom.json": PUBSUB,
    "eventbridge_scheduled.json": TIMER,
    "function_url.json": HTTP,
    "kinesis.json": PUBSUB,
    "msk.json": PUBSUB,
    "s3_put.json": DATASOURCE,
    "self_managed_kafka.json": PUBSUB,
    "sns.json": PUBSUB,
    "sqs.json": PUBSUB,
}
HTTP_SAMPLES = sorted(name for name, trigger in EXPECTED_TRIGGERS.items() if trigger == HTTP)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"

# The only values the functions may read: the event source names they classify by, and the
# trace context headers they exist to return.
INSPECTED_KEYS = frozenset({"eventSource", "EventSource", "detail-type"})
TRACE_KEYS = frozenset({"traceparent", "tracestate"})


def load(name):
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def with_headers(name, **extra):
    """The sample ``name`` with ``extra`` added to its single-value headers."""
    event = load(name)
    event["headers"] = {**event["headers"], **extra}
    return event


class Untouchable:
    """A value nobody may look at: comparing, hashing, printing or testing it raises."""

    def _touched(self, *args):
        raise AssertionError("an event value outside the event's shape was read")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _touched
    __hash__ = __bool__ = __len__ = __iter__ = __contains__ = _touched
    __str__ = __repr__ = __format__ = __bytes__ = _touched
    __getitem__ = _touched


def untouchable_values(event, keep):
    """``event`` with every leaf value replaced by an Untouchable, except under ``keep`` keys.

    Keys and containers (dicts, lists) stay: they are the event's shape.
    """
    if isinstance(event, dict):
        return {
            key: value if key in keep else untouchable_values(value, keep)
            for key, value in event.items()
        }
    if isinstance(event, list):
        return [untouchable_values(value, keep) for value in event]
    return Untouchable()


# --- trigger_of -------------------------------------------------------------------------


def test_every_sample_event_file_has_an_expected_trigger():
    # GIVEN the sample event files on disk
    names = sorted(path.name for path in EVENTS.glob("*.json"))
    # THEN each is covered by the parametrized trigger test, and none is missing
    assert names == sorted(EXPECTED_TRIGGERS)


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_TRIGGERS.items()))
def test_trigger_of_documented_sample_event(name, expected):
    # GIVEN AWS's documented sample event for one event source
    event = load(name)
    # WHEN it is classified
    trigger = trigger_of(event)
    # THEN it gets OpenTelemetry's faas.trigger for that source
    assert trigger == expected


def test_amazon_mq_event_has_no_records_key():
    # GIVEN the documented Amazon MQ events (the shape the classifier once missed)
    activemq = load("amazon_mq_activemq.json")
    rabbitmq = load("amazon_mq_rabbitmq.json")
    # THEN they carry their messages under their own keys, not under Records/records
    assert (activemq["eventSource"], sorted(activemq)) == (
        "aws:mq",
        ["eventSource", "eventSourceArn", "messages"],
    )
    assert (rabbitmq["eventSource"], sorted(rabbitmq)) == (
        "aws:rmq",
        ["eventSource", "eventSourceArn", "rmqMessagesByQueue"],
    )
    # AND both are still pubsub
    assert (trigger_of(activemq), trigger_of(rabbitmq)) == (PUBSUB, PUBSUB)


@pytest.mark.parametrize(
    "event",
    [None, [], [{"eventSource": "aws:sqs"}], "aws:sqs", b"{}", 42, {}],
    ids=["None", "empty-list", "list", "str", "bytes", "int", "empty-dict"],
)
def test_trigger_of_event_that_is_not_a_known_shape(event):
    assert trigger_of(event) == OTHER


def test_trigger_of_records_with_an_unknown_or_missing_event_source():
    assert trigger_of({"Records": [{"eventSource": "aws:ses"}]}) == OTHER
    assert trigger_of({"Records": [{"body": "no source"}]}) == OTHER
    assert trigger_of({"Records": ["not a record"]}) == OTHER
    assert trigger_of({"Records": []}) == OTHER


# --- w3c_context_of ---------------------------------------------------------------------


@pytest.mark.parametrize("name", HTTP_SAMPLES)
def test_w3c_context_from_lower_case_headers(name):
    # GIVEN an HTTP event whose headers carry the trace context in lower case (HTTP/2, ALB,
    # API Gateway v2 and function URLs lower-case header names)
    event = with_headers(name, traceparent=TRACEPARENT, tracestate=TRACESTATE)
    # WHEN the trace context is read
    context = w3c_context_of(event)
    # THEN both headers are returned as sent
    assert context == (TRACEPARENT, TRACESTATE)


def test_w3c_context_from_mixed_case_headers_of_api_gateway_rest():
    # GIVEN an API Gateway REST (v1) event, which keeps the caller's header case
    event = with_headers("apigateway_rest_v1.json", Traceparent=TRACEPARENT, TraceState=TRACESTATE)
    # WHEN the trace context is read
    context = w3c_context_of(event)
    # THEN header names are matched case-insensitively
    assert context == (TRACEPARENT, TRACESTATE)


def test_w3c_context_with_traceparent_only():
    event = with_headers("apigateway_rest_v1.json", TRACEPARENT=TRACEPARENT)
    assert w3c_context_of(event) == (TRACEPARENT, None)


@pytest.mark.parametrize("name", sorted(EXPECTED_TRIGGERS))
def test_w3c_context_absent_from_every_sample_event(name):
    # GIVEN a documented sample event, which carries no W3C trace context
    # THEN there is none to return (X-Amzn-Trace-Id is X-Ray's, not W3C's)
    assert w3c_context_of(load(name)) == (None, None)


@pytest.mark.parametrize(
    "headers",
    [None, [["traceparent", TRACEPARENT]], f"traceparent: {TRACEPARENT}", 7, {}],
    ids=["null", "list", "str", "int", "empty"],
)
def test_w3c_context_of_event_whose_headers_are_not_a_mapping(headers):
    # GIVEN an event whose headers are null (API Gateway REST without headers) or not a dict
    event = load("apigateway_rest_v1.json")
    event["headers"] = headers
    # THEN no trace context is found, and nothing raises
    assert w3c_context_of(event) == (None, None)


def test_w3c_context_ignores_non_string_header_values():
    # GIVEN trace headers whose values are not strings (e.g. multi-value lists)
    event = with_headers("alb.json", traceparent=[TRACEPARENT], tracestate={"v": TRACESTATE})
    # THEN they are not returned
    assert w3c_context_of(event) == (None, None)


@pytest.mark.parametrize(
    "event",
    [None, [], [{"headers": {"traceparent": TRACEPARENT}}], f"traceparent={TRACEPARENT}", 3.5],
    ids=["None", "empty-list", "list", "str", "float"],
)
def test_w3c_context_of_event_that_is_not_a_mapping(event):
    assert w3c_context_of(event) == (None, None)


# --- only the shape is read -------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_TRIGGERS.items()))
def test_only_the_shape_of_a_sample_event_is_read(name, expected):
    # GIVEN a sample event whose every value is untouchable, except the source names
    event = untouchable_values(load(name), keep=INSPECTED_KEYS)
    # WHEN it is classified and its trace context looked for
    trigger = trigger_of(event)
    context = w3c_context_of(event)
    # THEN the results are the same, so no other value was read
    assert trigger == expected
    assert context == (None, None)


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("apigateway_rest_v1.json", {"Traceparent": TRACEPARENT, "Tracestate": TRACESTATE}),
        ("apigateway_http_v2.json", {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}),
    ],
    ids=["mixed-case", "lower-case"],
)
def test_only_trace_headers_are_read_among_header_values(name, headers):
    # GIVEN an HTTP event whose every value but the trace context headers is untouchable
    event = untouchable_values(
        with_headers(name, **headers), keep=INSPECTED_KEYS | TRACE_KEYS | set(headers)
    )
    # WHEN it is read
    trigger = trigger_of(event)
    context = w3c_context_of(event)
    # THEN only the trace context comes back
    assert (trigger, context) == (HTTP, (TRACEPARENT, TRACESTATE))


def test_no_secret_from_the_event_is_returned():
    # GIVEN an HTTP event full of secrets besides its trace context
    secret = "s3cr3t-7f1c9e"
    event = with_headers(
        "apigateway_rest_v1.json",
        Authorization=f"Bearer {secret}",
        Cookie=f"session={secret}",
        traceparent=TRACEPARENT,
    )
    event["body"] = json.dumps({"password": secret})
    event["queryStringParameters"] = {"token": secret}
    event["requestContext"]["identity"]["accessKey"] = secret
    original = copy.deepcopy(event)
    # WHEN it is classified and its trace context read
    results = (trigger_of(event), w3c_context_of(event))
    # THEN exactly the shape's trigger and the trace context come back, without the secret
    assert results == (HTTP, (TRACEPARENT, None))
    assert secret not in repr(results)
    # AND the event is left as it was
    assert event == original


def test_tracestate_in_another_case_beside_a_lower_case_traceparent():
    headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "TraceState": "vendor=1",
    }
    assert w3c_context_of({"headers": headers}) == (headers["traceparent"], "vendor=1")


def test_alb_with_multi_value_headers_keeps_the_trace_context():
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = {"requestContext": {"elb": {}}, "multiValueHeaders": {"traceparent": [traceparent]}}
    assert trigger_of(event) == "http"
    assert w3c_context_of(event) == (traceparent, None)
