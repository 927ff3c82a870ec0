"""Each advice rule on traces that must trigger it and traces that must not."""

from __future__ import annotations

import pytest

from lifecycle_probe.report.reader import Reader
from lifecycle_probe.report.summary import Summary
from tests.report.synthetic import Function, hazard, leak, stale

SP = "site-packages"


def advice(function: Function, rule: str) -> list[dict[str, str]]:
    reader = Reader()
    summary = Summary()
    for number, line in enumerate(function.lines):
        summary.add_all(reader.read_line(line, f"line {number}"))
    items = summary.finish().to_json()["advice"]
    return [item for item in items if item["rule"] == rule]


# -- imports worth deferring ----------------------------------------------------------------


def test_a_slow_import_in_several_environments_is_worth_deferring():
    f = Function()
    f.invoke("a", 0, init_s=0.5, imports=(("pandas", 0.3, SP), ("small", 0.004, SP)))
    f.invoke("b", 10, init_s=0.5, imports=(("pandas", 0.25, SP), ("small", 0.004, SP)))
    [item] = advice(f, "defer-import")
    assert item["title"] == "Defer importing pandas"
    assert (
        "took 250 ms by itself (p50) at INIT in 2 environments, 50% of INIT's p50"
        in item["evidence"]
    )
    assert "not visible to the probe" in item["evidence"]
    assert item["expected_gain"].startswith("up to 250 ms off every INIT (2 on-demand cold starts")


def test_a_slow_module_deep_in_a_library_names_the_functions_own_import_of_it():
    # GIVEN the handler module importing boto3, whose tree holds a slow C extension and a
    # slow pure-Python module, in two environments
    tree = (
        ("app", 0.01, "function"),
        ("boto3", 0.02, SP, "app"),
        ("botocore", 0.03, SP, "boto3"),
        ("awscrt", 0.01, SP, "botocore"),
        ("_awscrt", 0.3, SP, "awscrt"),
        ("botocore.loaders", 0.2, SP, "botocore"),
        ("requests", 0.15, SP, "app"),
    )
    f = Function()
    f.invoke("a", 0, init_s=0.8, imports=tree)
    f.invoke("b", 10, init_s=0.8, imports=tree)
    # THEN the advice names what the handler imports (boto3, once, for its slowest module;
    # then requests), never a module it does not import itself
    items = advice(f, "defer-import")
    assert [item["title"] for item in items] == [
        "Defer importing boto3",
        "Defer importing requests",
    ]
    assert items[0]["evidence"].startswith("_awscrt (imported by boto3) took 300 ms by itself")
    assert items[0]["action"].startswith("import boto3 inside the code path that needs it")
    assert items[1]["evidence"].startswith("requests took 150 ms by itself")


def test_no_defer_advice_for_cheap_runtime_or_single_environment_imports():
    f = Function()
    f.invoke("a", 0, init_s=0.5, imports=(("json", 0.3, "runtime"), ("tiny", 0.004, SP)))
    f.invoke("b", 10, init_s=0.5, imports=(("json", 0.3, "runtime"), ("once", 0.2, SP)))
    f.invoke("c", 20, init_s=0.5, imports=(("tiny", 0.004, SP),))
    assert advice(f, "defer-import") == []


# -- clients made in the handler -------------------------------------------------------------


def test_a_client_library_imported_during_invocations_is_flagged():
    f = Function()
    f.invoke("a", 0, after_init_imports=(("boto3", 0.2, SP),))
    f.invoke("b", 5, after_init_imports=(("boto3", 0.2, SP),))
    [item] = advice(f, "client-in-handler")
    assert item["title"] == "Create the boto3 client once, at INIT"
    assert "in 2 environments (2 imports)" in item["evidence"]


def test_clients_imported_at_init_or_other_lazy_imports_are_not_flagged():
    f = Function()
    f.invoke("a", 0, imports=(("boto3", 0.2, SP),), after_init_imports=(("yaml", 0.01, SP),))
    assert advice(f, "client-in-handler") == []


# -- stale connections -----------------------------------------------------------------------


def test_connections_dead_after_idle_get_the_setting_to_change():
    f = Function()
    f.invoke("a", 0)
    f.invoke("a", 400, events=(stale(399.0, "failed", db_system="postgresql"),))
    f.invoke("a", 800, events=(stale(399.5, "detected", db_system="postgresql", reconnect_s=0.02),))
    [item] = advice(f, "stale-connection")
    assert item["title"] == "Connections to postgresql are reused after the idle cut-off"
    assert item["evidence"].startswith("1 failed, 1 detected (replaced before use) and 0 risky")
    assert "connections idle 399.0 s or more were dead" in item["evidence"]
    assert item["expected_gain"] == "1 request that failed on a dead connection would not have"
    assert "keepalives_idle" in item["action"]


def test_no_stale_advice_without_stale_events():
    f = Function()
    f.invoke("a", 0)
    f.invoke("a", 400)
    assert advice(f, "stale-connection") == []


# -- provisioned concurrency -----------------------------------------------------------------


def test_provisioned_concurrency_sized_from_observed_concurrency():
    # GIVEN bursts of three concurrent cold starts, the environments reaped between bursts
    f = Function()
    for burst in range(3):
        for index in range(3):
            env = f"b{burst}-{index}"
            f.invoke(env, burst * 100 + index * 0.01, duration_s=1.0)
            f.invoke(env, burst * 100 + 2, duration_s=0.1)
    [item] = advice(f, "provisioned-concurrency")
    # THEN 3 provisioned environments remove all 9 cold starts, 1 removes a third
    assert item["title"] == "Provisioned concurrency of 3 would have removed 100% of cold starts"
    assert "9 on-demand cold starts in 18 invocations" in item["evidence"]
    assert "at most 3 environments were alive at once" in item["evidence"]
    assert "1: 3/9, 2: 6/9, 3: 9/9" in item["evidence"]
    assert item["expected_gain"].startswith("9 cold starts fewer, about 200 ms (INIT p50) each")


def test_no_provisioned_advice_with_few_cold_starts_or_none_on_demand():
    few = Function()
    few.invoke("a", 0)
    few.invoke("b", 0.01)
    for at in range(1, 50):
        few.invoke("a", at)
    assert advice(few, "provisioned-concurrency") == []
    provisioned = Function()
    for index in range(5):
        provisioned.invoke(f"p{index}", index * 0.01, start="provisioned")
    assert advice(provisioned, "provisioned-concurrency") == []


# -- leaks and SnapStart hazards (issue 14's records, synthetic here) ------------------------


def test_leaked_globals_and_snapstart_hazards_are_advised():
    f = Function()
    f.invoke("a", 0)
    f.invoke("a", 1, events=(leak("app", "current_order_id", 2),))
    f.invoke("a", 2, events=(leak("app", "current_order_id", 2),))
    f.invoke("r", 3, start="restored", events=(hazard("app", "db", "connection"),))
    [leaked] = advice(f, "global-leak")
    assert leaked["title"] == "Request state kept in app.current_order_id"
    assert leaked["evidence"] == (
        "app.current_order_id was rebound to a value from the event in 2 invocations across "
        "1 environment, first at invocation 2"
    )
    [snap] = advice(f, "snapstart-hazard")
    assert snap["title"] == "SnapStart: app.db is shared by every restored environment"
    assert "register_after_restore" in snap["action"]


def test_no_leak_or_hazard_advice_without_their_records():
    f = Function()
    f.invoke("a", 0)
    f.invoke("r", 3, start="restored")
    assert advice(f, "global-leak") == []
    assert advice(f, "snapstart-hazard") == []


@pytest.mark.parametrize(
    ("top", "title", "evidence"),
    [
        # With @probe, tracing begins inside the handler module's import: what it imports
        # sits at the top of the tree, and is named.
        ((SP, "wrapper"), "Defer importing wrapper", "heavy (imported by wrapper) took 300 ms"),
        # A tree whose top is the runtime's own (the standard library) names no importer.
        (("runtime", "json"), "Defer importing heavy", "heavy took 300 ms"),
    ],
)
def test_a_slow_module_under_a_top_level_import(top, title, evidence):
    # GIVEN a slow library under a top-level import, in two environments
    origin, name = top
    tree = ((name, 0.01, origin), ("heavy", 0.3, SP, name))
    f = Function()
    f.invoke("a", 0, init_s=0.8, imports=tree)
    f.invoke("b", 10, init_s=0.8, imports=tree)
    # THEN the advice names what the function can move
    [item] = advice(f, "defer-import")
    assert item["title"] == title
    assert item["evidence"].startswith(evidence)
