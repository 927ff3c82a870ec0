"""The zero-code entry point: ``_HANDLER=lifecycle_probe.handler.handler``."""

import importlib
import sys

import pytest

from lifecycle_probe.records import COLD, WARM
from lifecycle_probe.testing import FakeContext, capture_records


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def make(name, body):
        (tmp_path / f"{name}.py").write_text(body)
        names.append(name)

    yield make
    for name in [*names, "lifecycle_probe.handler"]:
        sys.modules.pop(name, None)


def load_entry_point():
    sys.modules.pop("lifecycle_probe.handler", None)
    return importlib.import_module("lifecycle_probe.handler")


def test_wraps_the_functions_own_handler(user_module, monkeypatch):
    user_module("plain_app", "def handler(event, context):\n    return {'echo': event}\n")
    monkeypatch.setenv("LIFECYCLE_PROBE_HANDLER", "plain_app.handler")
    monkeypatch.setenv("LIFECYCLE_PROBE_EXPORTER", "none")
    entry = load_entry_point()
    with capture_records() as captured:
        assert entry.handler({"a": 1}, FakeContext()) == {"echo": {"a": 1}}
        assert entry.handler({"a": 2}, FakeContext()) == {"echo": {"a": 2}}
    assert captured.starts == [COLD, WARM]


def test_a_handler_that_already_carries_probe_is_recorded_once(user_module, monkeypatch):
    user_module(
        "probed_app",
        "from lifecycle_probe import probe, current\n"
        "@probe(exporter='none')\n"
        "def handler(event, context):\n    return current().invocation_seq\n",
    )
    monkeypatch.setenv("LIFECYCLE_PROBE_HANDLER", "probed_app.handler")
    entry = load_entry_point()
    with capture_records() as captured:
        assert [entry.handler({}, None) for _ in range(3)] == [1, 2, 3]
    assert captured.starts == [COLD, WARM, WARM]


def test_missing_handler_variable_fails_init_with_a_clear_error(monkeypatch):
    monkeypatch.delenv("LIFECYCLE_PROBE_HANDLER", raising=False)
    with pytest.raises(RuntimeError, match="LIFECYCLE_PROBE_HANDLER is not set"):
        load_entry_point()
    sys.modules.pop("lifecycle_probe.handler", None)
