"""SnapStart hazards: recording at INIT, the search of the globals, the report (snapstart.py)."""

from __future__ import annotations

import datetime
import os
import random
import sys
import time
import types
import uuid

import pytest

from lifecycle_probe import snapstart
from lifecycle_probe.records import HAZARD_EVENT
from lifecycle_probe.snapstart import (
    CONNECTION,
    CREDENTIALS,
    MAX_RECORDED,
    RANDOM,
    TIMESTAMP,
    random_forms,
    search,
)
from lifecycle_probe.testing import fresh_environment


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setattr(snapstart, "_recorded", [])
    monkeypatch.setattr(snapstart, "_recording", [False])
    monkeypatch.setattr(snapstart, "_wrapped", [])
    yield
    snapstart.stop_recording()


@pytest.fixture
def function_module(tmp_path, monkeypatch):
    """A module of the function's own code (a file under the task root), in sys.modules."""
    module = types.ModuleType("fn_globals")
    module.__file__ = str(tmp_path / "fn_globals.py")
    monkeypatch.setitem(sys.modules, "fn_globals", module)
    return module


def window():
    now = time.time_ns()
    return (now - 5_000_000_000, now + 5_000_000_000)


def test_values_returned_during_init_are_recorded_then_the_originals_restored(recording):
    original_random = random.random
    snapstart.start_recording()
    assert random.random is not original_random
    drawn = random.random()
    made = uuid.uuid4()
    data = os.urandom(8)
    snapstart.stop_recording()
    assert random.random is original_random
    values = snapstart.recorded_values()
    assert drawn in values
    assert made in values
    assert data in values
    # after the snapshot nothing more is recorded
    random.random()
    assert len(snapstart.recorded_values()) == len(values)


def test_recording_is_bounded(recording):
    snapstart.start_recording()
    for _ in range(MAX_RECORDED + 50):
        os.urandom(4)
    snapstart.stop_recording()
    assert len(snapstart.recorded_values()) == MAX_RECORDED


def test_random_forms_cover_text_and_uuids_made_of_bytes():
    data = bytes(range(16))
    made = uuid.UUID(bytes=data, version=4)
    forms = random_forms([0.123, 7, 123456, "short", "a-long-token", data, made])
    assert {0.123, 123456, "a-long-token", data, data.hex(), str(made), made.hex, made} <= forms
    # too common to tell: small ints, short strings
    assert 7 not in forms
    assert "short" not in forms


def test_the_search_names_each_kind(function_module, tmp_path):
    # the probe's own module: a plain import, so that a break in it fails here, never skips
    from lifecycle_probe.connections.tracking import ConnectionState

    class Connection:
        def __init__(self, closed):
            self.closed = closed
            self._lifecycle_probe_connection = ConnectionState("x", "postgresql", "h", 5432)

    class Holder:
        def __init__(self, value):
            self.value = value

    salt = os.urandom(16)
    token = uuid.UUID(bytes=os.urandom(16), version=4)
    function_module.SALT = salt.hex()
    function_module.TOKEN = token
    function_module.NESTED = {"ids": [Holder(random.Random().random())]}
    function_module.STARTED = time.time()
    function_module.STARTED_MS = int(time.time() * 1000)
    function_module.STARTED_DT = datetime.datetime.now()
    function_module.STS = {"AccessKeyId": "x", "Expiration": datetime.datetime(2030, 1, 1)}
    function_module.CREDS = types.SimpleNamespace(expiry_time="later")
    function_module.OPEN = Connection(closed=0)
    function_module.CLOSED = Connection(closed=1)
    # fine to share
    function_module.TABLE = "orders"
    function_module.RETRIES = 3
    function_module.OLD = datetime.datetime(2020, 1, 1)
    function_module.LIMIT = 1.5
    nested_value = function_module.NESTED["ids"][0].value
    values = (salt, token, nested_value)
    found = search(str(tmp_path), window(), values)
    assert sorted(found) == sorted(
        [
            ("fn_globals", "SALT", RANDOM),
            ("fn_globals", "TOKEN", RANDOM),
            ("fn_globals", "NESTED", RANDOM),
            ("fn_globals", "STARTED", TIMESTAMP),
            ("fn_globals", "STARTED_MS", TIMESTAMP),
            ("fn_globals", "STARTED_DT", TIMESTAMP),
            ("fn_globals", "STS", CREDENTIALS),
            ("fn_globals", "CREDS", CREDENTIALS),
            ("fn_globals", "OPEN", CONNECTION),
        ]
    )


def test_other_modules_are_not_searched(function_module, tmp_path):
    function_module.STARTED = time.time()
    assert search(str(tmp_path / "elsewhere"), window(), ()) == []
    assert search(None, window(), ()) == []


def test_a_hostile_global_is_no_trouble(function_module, tmp_path):
    class Hostile:
        def __getattr__(self, name):
            raise RuntimeError("no")

        def __eq__(self, other):
            raise RuntimeError("no")

        __hash__ = None  # type: ignore[assignment]

    function_module.HOSTILE = Hostile()
    function_module.DEEP = [[[[[[time.time()]]]]]]  # beyond the depth searched
    assert search(str(tmp_path), window(), ()) == []


def test_hazards_are_reported_once_per_restore(monkeypatch, caplog):
    monkeypatch.setattr(snapstart, "_found", [("handler", "SALT", RANDOM)])
    monkeypatch.setattr(snapstart, "_reported_for", [None])
    environment = fresh_environment(start="restored")
    environment.mark_restored()
    facts = environment.begin_invocation("r1", 10**9, time.time_ns()).facts()
    assert snapstart.report(environment, facts) == 1
    (event,) = environment.take_events()
    assert event.name == HAZARD_EVENT
    assert dict(event.attributes) == {
        "code.namespace": "handler",
        "lifecycle.global.name": "SALT",
        "lifecycle.snapstart.hazard.kind": RANDOM,
    }
    assert "SnapStart hazard: handler.SALT holds a random value" in caplog.text
    # the same environment: not again; a new restore: again
    assert snapstart.report(environment, facts) == 0
    environment.mark_restored()
    facts = environment.begin_invocation("r2", 10**9, time.time_ns()).facts()
    assert snapstart.report(environment, facts) == 1


def test_without_the_runtime_hooks_the_search_runs_at_the_first_invocation(
    monkeypatch, function_module, tmp_path
):
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    monkeypatch.setattr(snapstart, "_found", None)
    monkeypatch.setattr(snapstart, "_reported_for", [None])
    environment = fresh_environment(start="restored")
    function_module.STARTED = time.time()
    facts = environment.begin_invocation("r1", 10**9, time.time_ns()).facts()
    assert snapstart.report(environment, facts) == 1
    (event,) = environment.take_events()
    assert dict(event.attributes)["lifecycle.snapstart.hazard.kind"] == TIMESTAMP
