"""A bad option's warning echoes a cut value: one readable line, whatever the value holds."""

import logging

import pytest

from lifecycle_probe.config import Config


@pytest.mark.parametrize(
    "value",
    ["9" * 5000, "x" * 5000],
    ids=["5000 digits", "5000 letters"],
)
def test_a_huge_variable_value_is_echoed_cut_to_its_first_40_characters(caplog, value):
    # GIVEN a LIFECYCLE_PROBE_* variable holding 5000 characters
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        config = Config.resolve(environ={"LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS": value})
    # THEN the default is used, and the one warning shows the value's start, cut with "…"
    assert config.flush_timeout_ms == Config.resolve(environ={}).flush_timeout_ms
    [message] = [r.getMessage() for r in caplog.records]
    assert "LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS=" + repr(value)[:40] + "…" in message
    assert len(message) < 300


def test_an_argument_past_pythons_digit_limit_warns_instead_of_raising(caplog):
    # GIVEN an argument whose repr() itself raises (an int past 4300 digits)
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        config = Config.resolve(environ={}, flush_timeout_ms=10**5000)
    # THEN the default is used and the warning names the argument, not the value
    assert config.flush_timeout_ms == Config.resolve(environ={}).flush_timeout_ms
    [message] = [r.getMessage() for r in caplog.records]
    assert "argument flush_timeout_ms=<int too long to show>" in message


def test_an_unknown_options_value_is_cut_too(caplog):
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        Config.resolve(environ={}, expoter="c" * 5000)
    [message] = [r.getMessage() for r in caplog.records]
    assert "unknown option expoter='" + "c" * 39 + "…" in message
    assert len(message) < 400
