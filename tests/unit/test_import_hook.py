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
    return "probe" if current is imports._hook else "other"
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
    assert seen == ["original", "probe", "called back", "original", "probe", "original"]


def test_a_callback_gets_the_module_as_imported_with_its_own_loader():
    seen = run_fresh(
        PRELUDE
        + """
import importlib

facts = {}


def callback(module):
    facts["value"] = module.VALUE
    facts["in sys.modules"] = sys.modules.get("lp_hook_a") is module
    facts["loader"] = type(module.__loader__).__name__


imports.when_imported("lp_hook_a", callback)
importlib.import_module("lp_hook_a")
print(json.dumps(facts))
"""
    )
    assert seen == {
        "value": 1,
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


def test_a_circular_import_calls_back_once_the_module_is_whole():
    # GIVEN a watched package whose submodule asks for the package while it is importing
    seen = run_fresh(
        PRELUDE
        + """
import importlib

os.mkdir(os.path.join(directory, "lp_circ"))
with open(os.path.join(directory, "lp_circ", "__init__.py"), "w") as package:
    package.write("from lp_circ import part\\nREADY = True\\n")
with open(os.path.join(directory, "lp_circ", "part.py"), "w") as part:
    part.write("import importlib\\nimportlib.import_module('lp_circ')\\n")
got = []
imports.when_imported("lp_circ", lambda module: got.append(getattr(module, "READY", False)))
import lp_circ
print(json.dumps(got))
"""
    )
    # THEN the callback ran once, on the finished module, not on the half-made one the
    # machinery handed to the inner import_module
    assert seen == [True]


def test_a_tool_that_puts_back_what_it_found_leaves_the_watches_working():
    # GIVEN a tool that wraps the machinery for a while, and the probe hooked in meanwhile
    seen = run_fresh(
        PRELUDE
        + """
saved = _frozen_importlib._find_and_load
_frozen_importlib._find_and_load = lambda name, import_: saved(name, import_)
got = []
imports.when_imported("lp_hook_a", lambda module: got.append("a"))
tracer = imports.start_import_tracing(lambda: True)
_frozen_importlib._find_and_load = saved  # the tool puts back what it found
# WHEN the probe watches another module, then both are imported
imports.when_imported("lp_hook_b", lambda module: got.append("b"))
import lp_hook_a, lp_hook_b
traced = sorted(r.module for r in tracer.take_init() if r.module.startswith("lp_hook"))
print(json.dumps([got, traced, machinery()]))
"""
    )
    # THEN the probe's hook is back in place: both callbacks ran, both imports were traced
    assert seen == [["a", "b"], ["lp_hook_a", "lp_hook_b"], "probe"]


def test_a_watched_import_on_a_thread_inside_the_probes_lock_does_not_hang():
    # GIVEN this thread holds the probe's lock (as when a signal handler or a finaliser
    # runs inside when_imported), WHEN it imports a watched module
    seen = run_fresh(
        PRELUDE
        + """
import threading

got = []
imports.when_imported("lp_hook_a", lambda module: got.append(module.VALUE))


def inside_the_lock():
    with imports._lock:
        import lp_hook_a


worker = threading.Thread(target=inside_the_lock, daemon=True)
worker.start()
worker.join(30)
print(json.dumps([worker.is_alive(), got]))
"""
    )
    # THEN the import and its callback complete
    assert seen == [False, [1]]


def test_reloading_the_module_leaves_imports_working_and_traced_once():
    seen = run_fresh(
        PRELUDE
        + """
import importlib

imports.start_import_tracing(lambda: True)
imports.when_imported("lp_hook_a", lambda module: None)
importlib.reload(imports)
import fractions  # through the hook made before the reload
got = []
imports.when_imported("lp_hook_b", lambda module: got.append(module.VALUE))
tracer = imports.start_import_tracing(lambda: True)
import lp_hook_b
records = [r.module for r in tracer.take_init()]
print(json.dumps([got, records.count("lp_hook_b"), "fractions" in sys.modules, machinery()]))
"""
    )
    assert seen == [[1], 1, True, "probe"]


def test_a_thread_importing_the_module_meanwhile_waits_for_its_callbacks():
    # GIVEN a slow callback (as connection tracking's first patch, which loads wrapt)
    # WHEN another thread imports the module while the callback runs
    seen = run_fresh(
        PRELUDE
        + """
import threading, time

started = threading.Event()
got = {}


def other_thread():
    started.wait(30)
    import lp_hook_a

    got["other thread"] = lp_hook_a.VALUE


def patch(module):
    threading.Thread(target=other_thread, daemon=True).start()
    started.set()
    time.sleep(0.3)  # the other thread's import is under way meanwhile
    module.VALUE = "patched"


imports.when_imported("lp_hook_a", patch)
import lp_hook_a

deadline = time.monotonic() + 30
while "other thread" not in got and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps(got))
"""
    )
    # THEN the other thread got the module patched: its import waited for the callback
    assert seen == {"other thread": "patched"}
