"""Properties that hold for every event, context and configuration (hypothesis).

Whatever a caller hands the handler, the probe hands it on untouched, returns the very
result or lets the very exception through, closes its record and leaves nothing in flight;
whatever text sits in a variable, the configuration is valid and bounded.
"""

from __future__ import annotations

import math
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle_probe import current, probe
from lifecycle_probe.config import _DEFAULTS, _MAXIMA, _VARIABLES, EXPORTERS, Config
from lifecycle_probe.testing import capture_records, fresh_environment
from lifecycle_probe.triggers import DATASOURCE, HTTP, OTHER, PUBSUB, TIMER

TRIGGERS = {HTTP, PUBSUB, DATASOURCE, TIMER, OTHER}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Hostile:
    """An object whose every door raises: attribute access, item access, iteration, ``get``."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no attribute {name} for you")

    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("no items for you")

    def __iter__(self) -> Any:
        raise RuntimeError("no iteration for you")

    def __len__(self) -> int:
        raise RuntimeError("no length for you")

    def __bool__(self) -> bool:
        raise RuntimeError("no truth for you")


class HostileMapping(dict):  # type: ignore[type-arg]
    """A real dict (so isinstance checks pass) whose own methods raise."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no get for you")

    def items(self) -> Any:
        raise RuntimeError("no items for you")

    def __contains__(self, key: object) -> bool:
        raise RuntimeError("no membership for you")


def deep(depth: int) -> dict[str, Any]:
    event: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        event = {"requestContext": event, "Records": [event]}
    return event


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.binary(max_size=50),
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.sampled_from(
                [
                    "requestContext",
                    "http",
                    "httpMethod",
                    "headers",
                    "multiValueHeaders",
                    "Records",
                    "eventSource",
                    "EventSource",
                    "records",
                    "messages",
                    "detail-type",
                    "source",
                    "traceparent",
                    "tracestate",
                    "Traceparent",
                ]
            )
            | st.text(max_size=10),
            children,
            max_size=6,
        ),
    ),
    max_leaves=30,
)
events = st.one_of(
    json_like,
    st.builds(Hostile),
    st.builds(HostileMapping, st.dictionaries(st.text(max_size=5), scalars, max_size=3)),
    st.integers(min_value=0, max_value=400).map(deep),
    st.integers(min_value=1, max_value=6).map(lambda mb: {"body": "x" * (mb << 20)}),
)


class ContextWithout:
    """A context with only some of the attributes a Lambda context has."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


def raising() -> Any:
    raise RuntimeError("no remaining time for you")


contexts = st.one_of(
    st.none(),
    st.builds(Hostile),
    st.builds(
        ContextWithout,
        aws_request_id=st.one_of(st.none(), st.text(max_size=40), st.integers(), scalars),
        invoked_function_arn=st.one_of(st.none(), st.text(max_size=40), st.integers()),
        get_remaining_time_in_millis=st.one_of(
            st.just(raising),
            st.builds(lambda v: lambda: v, scalars),
        ),
        _epoch_deadline_time_in_ms=st.one_of(st.none(), st.integers(0, 2**62), st.text()),
    ),
)


@SETTINGS
@given(event=events, context=contexts, fails=st.booleans())
def test_the_handler_gets_the_very_event_and_its_result_or_exception_comes_back(
    event, context, fails
):
    fresh_environment()
    seen: list[tuple[Any, Any]] = []
    result = object()
    error = ValueError("the handler's own")

    def handler(ev: Any, ctx: Any) -> Any:
        seen.append((ev, ctx))
        if fails:
            raise error
        return result

    probed = probe(exporter="none")(handler)
    with capture_records() as got:
        outcome: Any
        try:
            outcome = probed(event, context)
        except ValueError as raised:
            outcome = raised
    assert outcome is (error if fails else result)
    # the very objects went in
    assert len(seen) == 1
    assert seen[0][0] is event
    assert seen[0][1] is context
    # one record, closed, of a known trigger, and nothing left in flight
    (record,) = got.records
    assert record.outcome == ("error" if fails else "ok")
    assert record.trigger in TRIGGERS
    assert record.facts.request_id is None or type(record.facts.request_id) is str
    assert record.deadline_ns is None or type(record.deadline_ns) is int
    assert current().start is None


@SETTINGS
@given(event=json_like)
def test_a_second_invocation_is_always_recorded_after_any_first(event):
    fresh_environment()
    probed = probe(exporter="none")(lambda ev, ctx: None)
    with capture_records() as got:
        probed(event, None)
        probed({}, None)
    assert [r.facts.invocation_seq for r in got.records] == [1, 2]
    assert [r.facts.start for r in got.records][1] == "warm"


variables = st.sampled_from(sorted(_DEFAULTS))
garbage = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=string.digits, min_size=1, max_size=6000),
    st.sampled_from(
        ["nan", "inf", "-inf", "-1", "1e300", "0x10", " 5 ", "true", "off", "none,otlp", ""]
    ),
)


@SETTINGS
@given(variable=variables, value=garbage)
def test_any_text_in_any_variable_gives_a_valid_bounded_configuration(variable, value):
    name = _VARIABLES.get(variable) or "LIFECYCLE_PROBE_" + variable.upper()
    if "\x00" in value:
        return  # no environment variable can hold a NUL
    config = Config.resolve({name: value})
    resolved = getattr(config, variable)
    default = _DEFAULTS[variable]
    if variable in _MAXIMA:
        assert isinstance(resolved, (int, float))
        assert 0 <= resolved <= _MAXIMA[variable]
        assert not (isinstance(resolved, float) and math.isnan(resolved))
    elif variable == "exporter":
        assert resolved
        assert set(resolved) <= set(EXPORTERS)
    elif isinstance(default, bool):
        assert isinstance(resolved, bool)
    elif variable == "namespace":
        assert 1 <= len(resolved) <= 255
        assert not resolved.startswith("AWS/")
    elif variable in ("service", "otlp_file"):
        assert resolved is None or (isinstance(resolved, str) and resolved.strip())
    else:
        assert isinstance(resolved, str)


@SETTINGS
@given(options=st.dictionaries(variables, garbage | scalars, max_size=4))
def test_any_explicit_options_never_raise_and_a_probe_still_passes_through(options):
    fresh_environment()
    try:
        probed = probe(**options)(lambda ev, ctx: "through")
    finally:
        from lifecycle_probe.sinks import forget_built_sinks

        forget_built_sinks()
    assert probed({}, None) == "through"
