"""The leak search in-process: what is and is not leaked request state, and its bound."""

from __future__ import annotations

import re
import sys
import time
import types

from lifecycle_probe.leaks import MAX_EVENT_NODES, EventValues, LeakWatch


def function_module(tmp_path, name, **globals_):
    """A module of the function's own code (its file under the task root)."""
    module = types.ModuleType(name)
    module.__file__ = str(tmp_path / f"{name}.py")
    module.__dict__.update(globals_)
    sys.modules[name] = module
    return module


def test_only_event_derived_rebindings_are_leaks(tmp_path):
    # GIVEN a function module with the article's globals, looked at before the handler
    module = function_module(
        tmp_path,
        "fn_leaks_a",
        current_order_id=None,
        cached_config=None,
        counter=0,
        PATTERN=None,
        nested=None,
        library_object=None,
    )
    try:
        watch = LeakWatch(str(tmp_path))
        watch.baseline()
        event = {"orderId": "ord-123456", "items": [{"sku": "SKU-99"}], "amount": 125000}
        # WHEN the invocation rebinds them
        module.current_order_id = event["orderId"]
        module.cached_config = {"table": "orders"}
        module.counter += 1
        module.PATTERN = re.compile(r"\d+")
        module.nested = {"last": [("sku", "SKU-99")]}
        module.library_object = types.SimpleNamespace(amount=125000)
        leaked = watch.after_invocation(event, 1, "env-1")
        # THEN the ones holding the event's values are leaks, the others are not
        assert sorted(leaked) == [
            ("fn_leaks_a", "current_order_id"),
            ("fn_leaks_a", "library_object"),
            ("fn_leaks_a", "nested"),
        ]
        # and a later invocation that leaks them again says nothing more
        event2 = {"orderId": "ord-654321"}
        module.current_order_id = event2["orderId"]
        assert watch.after_invocation(event2, 2, "env-1") == []
        # while a new environment (a fork, a restore) reports anew
        module.current_order_id = "ord-777777"
        assert watch.after_invocation({"orderId": "ord-777777"}, 1, "env-2") == [
            ("fn_leaks_a", "current_order_id")
        ]
    finally:
        del sys.modules["fn_leaks_a"]


def test_unchanged_globals_equal_to_event_values_are_not_leaks(tmp_path):
    module = function_module(tmp_path, "fn_leaks_b", STAGE="production", REGION="eu-west-1")
    try:
        watch = LeakWatch(str(tmp_path))
        watch.baseline()
        assert watch.after_invocation({"stage": "production", "region": "eu-west-1"}, 1, "e") == []
        assert module.STAGE == "production"
    finally:
        del sys.modules["fn_leaks_b"]


def test_modules_outside_the_task_root_are_not_looked_at(tmp_path):
    library = types.ModuleType("lib_leaks_c")
    library.__file__ = "/somewhere/site-packages/lib_leaks_c.py"
    library.__dict__["last"] = None
    sys.modules["lib_leaks_c"] = library
    try:
        watch = LeakWatch(str(tmp_path))
        watch.baseline()
        event = {"orderId": "ord-123456"}
        library.__dict__["last"] = event["orderId"]
        assert watch.after_invocation(event, 1, "e") == []
    finally:
        del sys.modules["lib_leaks_c"]


def test_a_6_mb_event_costs_no_more_than_the_bound():
    # GIVEN a 6 MB event: a huge body and thousands of records
    event = {
        "body": "x" * (6 << 20),
        "Records": [{"messageId": f"m-{n:08d}", "body": "y" * 500} for n in range(5000)],
    }
    # WHEN its values are read for the leak search
    start = time.perf_counter()
    values = EventValues(event)
    elapsed = time.perf_counter() - start
    # THEN no more nodes than the bound were looked at, the body was not compared
    assert values.visited == MAX_EVENT_NODES
    assert "x" * (6 << 20) not in values.values
    assert elapsed < 0.05  # generous: the bound is ~512 nodes, well under a millisecond


def test_a_huge_global_costs_no_more_than_the_bound(tmp_path):
    # GIVEN a global rebound to a list of a million items, none from the event
    module = function_module(tmp_path, "fn_leaks_d", big=None)
    try:
        watch = LeakWatch(str(tmp_path))
        watch.baseline()
        module.big = list(range(1_000_000))
        start = time.perf_counter()
        leaked = watch.after_invocation({"orderId": "ord-123456"}, 1, "e")
        elapsed = time.perf_counter() - start
    finally:
        del sys.modules["fn_leaks_d"]
    assert leaked == []
    assert elapsed < 0.05


def test_a_rebinding_is_found_after_unchanged_looks_and_name_changes(tmp_path):
    # GIVEN a function module looked at over invocations that rebind nothing (compared in
    # one pass), then one that deletes a global and binds a new name
    module = function_module(tmp_path, "fn_leaks_shape", current_user=None, other=None)
    try:
        watch = LeakWatch(str(tmp_path))
        watch.baseline()
        for seq in range(1, 4):
            assert watch.after_invocation({"user": "user-000001"}, seq, "env-1") == []
        del module.other
        module.later = None
        assert watch.after_invocation({"user": "user-000002"}, 4, "env-1") == []
        # WHEN an invocation rebinds the new name and the old one to its event's values
        event = {"user": "user-424242", "id": "id-424242"}
        module.current_user = event["user"]
        module.later = event["id"]
        # THEN both are found
        assert sorted(watch.after_invocation(event, 5, "env-1")) == [
            ("fn_leaks_shape", "current_user"),
            ("fn_leaks_shape", "later"),
        ]
    finally:
        del sys.modules["fn_leaks_shape"]


def test_a_batch_job_rebinding_its_own_globals_between_calls_is_no_leak(tmp_path, monkeypatch):
    from lifecycle_probe import probe, runtime_hooks
    from lifecycle_probe.records import LEAK_EVENT
    from lifecycle_probe.testing import FakeContext, capture_records, fresh_environment

    # GIVEN a script's module under the task root, no Lambda runtime, whose own loop calls
    # the probed handler with each order and keeps it in a global of its own
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    # (a test before this one may have wrapped a runtime client in this process)
    monkeypatch.setattr(runtime_hooks, "_wrapped", False)
    module = function_module(tmp_path, "fn_batch_job", order=None, last_order_id=None)
    fresh_environment()

    def handle(event, context):
        if event.get("remember"):
            module.last_order_id = event["orderId"]  # the handler's own leak
        return event["orderId"]

    handle.__module__ = "fn_batch_job"
    probed = probe(exporter="console")(handle)  # (the search runs for a probe that exports)
    orders = [{"orderId": f"ord-10000{n}"} for n in range(3)] + [
        {"orderId": "ord-100009", "remember": True}
    ]
    try:
        with capture_records() as captured:
            for order in orders:
                module.order = order  # the caller's loop, between the calls
                assert probed(order, FakeContext()) == order["orderId"]
    finally:
        del sys.modules["fn_batch_job"]
    # THEN only what the handler rebound is a leak, in the invocation that did it
    leaks = [
        (record.facts.invocation_seq, dict(event.attributes))
        for record in captured.records
        for event in record.events
        if event.name == LEAK_EVENT
    ]
    assert [(seq, a["code.namespace"], a["lifecycle.global.name"]) for seq, a in leaks] == [
        (4, "fn_batch_job", "last_order_id")
    ]
