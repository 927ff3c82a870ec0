"""The one import hook (``lifecycle_probe.imports``): importlib's ``_find_and_load``
wrapped while a post-import callback waits or tracing runs, and given back after.

Each case runs in a fresh interpreter: the hook is process-wide, and this test process has
the probe's own in place.
"""

from __future__ import annotations

from tests.fresh_process import run_fresh

# A module to watch, made in a temporary directory put on sys.path.
PRELUDE = """
import json, os, sys, tempfile
import _frozen_importlib

ORIGINAL = _frozen_importlib._find_and_load
directory = tempfile.mkdtemp()
for name in ("lp_hook_a", "lp_hook_b", "lp_hook_c"):
    with open(os.path.join(directory, name + ".py"), "w") as module:
        module.write("VALUE = 1\\n")
sys.path.insert(0, directory)

from lifecycle_probe import imports


def machinery():
    current = _frozen_importlib._find_and_load
    if current is ORIGINAL:
        return "original"
    return "probe" if current is imports._find_and_load else "other"
"""


def test_the_hook_is_there_while_a_callback_waits_or_tracing_runs_and_only_then():
    seen = run_fresh(
        PRELUDE
        + """
states = [machinery()]
imports.when_imported("lp_hook_a", lambda module: states.append("called back"))
states.append(machinery())
import lp_hook_a
states.append(machinery())  # the callback ran: nothing waits, no tracing
imports.start_import_tracing(lambda: True)
imports.when_imported("lp_hook_b", lambda module: None)
imports.stop_import_tracing()
states.append(machinery())  # lp_hook_b still watched
imports.remove_post_import_hooks()
states.append(machinery())
print(json.dumps(states))
"""
    )
    assert seen == ["original", "probe", "called back", "probe", "probe", "original"]


def test_a_callback_runs_after_the_machinery_is_done_with_the_module():
    seen = run_fresh(
        PRELUDE
        + """
import importlib

facts = {}


def callback(module):
    facts["spec initialising"] = module.__spec__._initializing
    facts["in sys.modules"] = sys.modules.get("lp_hook_a") is module
    facts["loader"] = type(module.__loader__).__name__


imports.when_imported("lp_hook_a", callback)
importlib.import_module("lp_hook_a")
print(json.dumps(facts))
"""
    )
    assert seen == {
        "spec initialising": False,
        "in sys.modules": True,
        "loader": "SourceFileLoader",
    }


def test_another_wrapper_around_the_hook_stays_and_the_hook_never_calls_itself():
    # GIVEN another library's wrapper put around the probe's hook
    seen = run_fresh(
        PRELUDE
        + """
imports.when_imported("lp_hook_a", lambda module: None)
probes = _frozen_importlib._find_and_load
calls = []


def other(name, import_):
    calls.append(name)
    return probes(name, import_)


_frozen_importlib._find_and_load = other
# WHEN the probe lets go of the hook, then wants it again
imports.remove_post_import_hooks()
after_removal = machinery()
called = []
imports.when_imported("lp_hook_c", lambda module: called.append(module.VALUE))
after_rewatch = machinery()
import lp_hook_c
print(json.dumps([after_removal, after_rewatch, "lp_hook_c" in calls, called]))
"""
    )
    # THEN the other wrapper stays in place around the probe's, which passes on and is
    # used again as it was (wrapped anew, it would call itself for ever)
    assert seen == ["other", "other", True, [1]]


def test_the_import_tracer_records_a_watched_module_with_its_callbacks_time():
    seen = run_fresh(
        PRELUDE
        + """
import time

tracer = imports.start_import_tracing(lambda: True)


def slow_callback(module):
    time.sleep(0.05)


imports.when_imported("lp_hook_a", slow_callback)
import lp_hook_a
(record,) = [r for r in tracer.take_init() if r.module == "lp_hook_a"]
print(json.dumps(record.self_ns))
"""
    )
    # the callback's 50 ms count in the watched module's import (generous bound below)
    assert 50_000_000 <= seen < 5_000_000_000
