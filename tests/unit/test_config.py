import logging

import pytest

from lifecycle_probe.config import Config


def test_defaults_without_any_variable():
    config = Config.resolve({})
    assert config.disabled is False
    assert config.exporter == ("emf",)
    assert config.flush == "after-response"
    assert config.flush_timeout_ms == 2000
    assert config.proactive_init_gap_ms == 1000
    assert config.connections is True
    assert config.globals == "warn"


def test_otlp_is_the_default_exporter_when_an_endpoint_is_set():
    assert Config.resolve({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}).exporter == (
        "otlp",
    )
    assert Config.resolve({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x"}).exporter == ("otlp",)


def test_environment_beats_default_and_explicit_beats_environment():
    environ = {
        "LIFECYCLE_PROBE_EXPORTER": "console, otlp-file",
        "LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS": "250",
        "LIFECYCLE_PROBE_DISABLED": "true",
        "LIFECYCLE_PROBE_CONNECTIONS": "off",
        "LIFECYCLE_PROBE_STALE_IDLE_S": "12.5",
    }
    from_env = Config.resolve(environ)
    assert from_env.exporter == ("console", "otlp-file")
    assert from_env.proactive_init_gap_ms == 250
    assert from_env.disabled is True
    assert from_env.connections is False
    assert from_env.stale_idle_s == 12.5

    explicit = Config.resolve(environ, exporter="none", proactive_init_gap_ms=10, disabled=False)
    assert explicit.exporter == ("none",)
    assert explicit.proactive_init_gap_ms == 10
    assert explicit.disabled is False
    # an explicit None counts as not given
    assert Config.resolve(environ, exporter=None).exporter == ("console", "otlp-file")


def test_none_exporter_wins_over_others_and_duplicates_collapse():
    assert Config.resolve({}, exporter="console,none").exporter == ("none",)
    assert Config.resolve({}, exporter=["console", "console"]).exporter == ("console",)


@pytest.mark.parametrize(
    ("variable", "value", "field", "default"),
    [
        ("LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS", "soon", "proactive_init_gap_ms", 1000),
        ("LIFECYCLE_PROBE_PROACTIVE_INIT_GAP_MS", "-5", "proactive_init_gap_ms", 1000),
        ("LIFECYCLE_PROBE_FLUSH", "eventually", "flush", "after-response"),
        ("LIFECYCLE_PROBE_EXPORTER", "kafka", "exporter", ("emf",)),
        ("LIFECYCLE_PROBE_DISABLED", "maybe", "disabled", False),
        ("LIFECYCLE_PROBE_STALE_IDLE_S", "nan", "stale_idle_s", 60.0),
        ("LIFECYCLE_PROBE_GLOBALS", "shout", "globals", "warn"),
    ],
)
def test_bad_value_warns_once_naming_variable_and_value_and_uses_default(
    caplog, variable, value, field, default
):
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        first = Config.resolve({variable: value})
        second = Config.resolve({variable: value})
    assert getattr(first, field) == default
    assert getattr(second, field) == default
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert variable in messages[0]
    assert repr(value) in messages[0]
    assert "default" in messages[0]


def test_bad_explicit_argument_warns_naming_the_argument(caplog):
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        config = Config.resolve({}, flush_timeout_ms=True, exporter="carrier-pigeon")
    assert config.flush_timeout_ms == 2000
    assert config.exporter == ("emf",)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "argument flush_timeout_ms=True" in text
    assert "argument exporter='carrier-pigeon'" in text


def test_unknown_option_is_reported_and_ignored(caplog):
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        config = Config.resolve({}, expoter="console")
    assert config.exporter == ("emf",)
    assert "unknown option expoter='console'" in caplog.records[0].getMessage()


def test_config_is_immutable_and_comparable():
    config = Config.resolve({})
    with pytest.raises(AttributeError):
        config.flush = "sync"  # type: ignore[misc]  # the type checker refuses it too
    assert config == Config.resolve({})
    assert config.replace(flush="sync").flush == "sync"
    assert "flush='after-response'" in repr(config)


def test_every_option_has_a_field_and_a_parser_in_the_same_order():
    # GIVEN the defaults, the parsers and the fields, each written once
    from lifecycle_probe.config import _DEFAULTS, _PARSERS

    # THEN they name the same options, in the order Config.resolve builds them
    assert Config._fields == tuple(_DEFAULTS) == tuple(_PARSERS)
    # AND the defaults are what a Config made of nothing holds
    assert Config.resolve({}).as_dict() == _DEFAULTS
    # AND a Config built by hand takes exactly its fields
    with pytest.raises(TypeError, match="exactly its fields"):
        Config(disabled=True)


def test_a_variable_unset_while_the_configuration_is_read_counts_as_not_set():
    from collections.abc import Iterator, Mapping

    class Vanishing(Mapping[str, str]):
        """Lists a variable that another thread unsets before it is read."""

        def __getitem__(self, key: str) -> str:
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            return iter(["LIFECYCLE_PROBE_FLUSH", "PATH"])

        def __len__(self) -> int:
            return 2

    assert Config.resolve(environ=Vanishing()).flush == "after-response"


def test_a_mapping_that_cannot_be_listed_is_asked_for_each_variable():
    class OnlyGet:
        def get(self, key: str, default: object = None) -> object:
            return {"LIFECYCLE_PROBE_FLUSH": "sync"}.get(key, default)

    config = Config.resolve(environ=OnlyGet())  # type: ignore[arg-type]
    assert (config.flush, config.exporter) == ("sync", ("emf",))


# -- reading the process's variables ---------------------------------------------------------


def test_a_variable_is_read_as_os_environ_reads_it(monkeypatch):
    from lifecycle_probe.config import variable

    monkeypatch.setenv("LIFECYCLE_PROBE_TEST_VALUE", "plain")
    monkeypatch.delenv("LIFECYCLE_PROBE_TEST_UNSET", raising=False)
    assert variable("LIFECYCLE_PROBE_TEST_VALUE") == "plain"
    assert variable("LIFECYCLE_PROBE_TEST_UNSET") is None
    # set and unset after the first read: each read sees the process's variables now
    monkeypatch.setenv("LIFECYCLE_PROBE_TEST_UNSET", "")
    assert variable("LIFECYCLE_PROBE_TEST_UNSET") == ""
    monkeypatch.delenv("LIFECYCLE_PROBE_TEST_VALUE")
    assert variable("LIFECYCLE_PROBE_TEST_VALUE") is None
    # a value that is not valid UTF-8 comes back as os.environ gives it (surrogate escapes)
    import os

    os.environb[b"LIFECYCLE_PROBE_TEST_BYTES"] = b"caf\xe9"
    try:
        assert variable("LIFECYCLE_PROBE_TEST_BYTES") == os.environ["LIFECYCLE_PROBE_TEST_BYTES"]
        assert variable("LIFECYCLE_PROBE_TEST_BYTES") == "caf\udce9"
    finally:
        del os.environb[b"LIFECYCLE_PROBE_TEST_BYTES"]


def test_a_replaced_os_environ_is_the_one_read(monkeypatch):
    import os

    from lifecycle_probe.config import variable

    monkeypatch.setattr(os, "environ", {"LIFECYCLE_PROBE_FLUSH": "sync"})
    assert variable("LIFECYCLE_PROBE_FLUSH") == "sync"
    assert variable("PATH") is None
    assert Config.resolve().flush == "sync"


def test_the_process_variables_are_those_of_the_configuration(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_PROBE_FLUSH", "sync")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "orders")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.delenv("LIFECYCLE_PROBE_EXPORTER", raising=False)
    config = Config.resolve()
    assert (config.flush, config.service, config.exporter) == ("sync", "orders", ("otlp",))
    monkeypatch.delenv("LIFECYCLE_PROBE_FLUSH")
    assert Config.resolve().flush == "after-response"


def test_a_variable_reader_reads_the_variable_now_at_every_call(monkeypatch):
    from lifecycle_probe.config import variable_reader

    monkeypatch.delenv("LIFECYCLE_PROBE_TEST_READER", raising=False)
    read = variable_reader("LIFECYCLE_PROBE_TEST_READER")
    assert read() is None
    monkeypatch.setenv("LIFECYCLE_PROBE_TEST_READER", "Root=1-abc")
    assert read() == "Root=1-abc"
    monkeypatch.setenv("LIFECYCLE_PROBE_TEST_READER", "Root=1-def")
    assert read() == "Root=1-def"
    monkeypatch.delenv("LIFECYCLE_PROBE_TEST_READER")
    assert read() is None
