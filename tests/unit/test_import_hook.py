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


def test_a_packages_callback_may_watch_the_submodule_being_imported():
    # GIVEN a watched package whose callback watches a submodule (as botocore's patch
    # watches botocore.endpoint), WHEN the first import names the submodule
    seen = run_fresh(
        PRELUDE
        + """
os.mkdir(os.path.join(directory, "lp_pkg"))
open(os.path.join(directory, "lp_pkg", "__init__.py"), "w").close()
with open(os.path.join(directory, "lp_pkg", "endpoint.py"), "w") as endpoint:
    endpoint.write("VALUE = 2\\n")
got = []


def package_imported(package):
    got.append(package.__name__)
    imports.when_imported("lp_pkg.endpoint", lambda module: got.append(module.VALUE))


imports.when_imported("lp_pkg", package_imported)
import lp_pkg.endpoint
print(json.dumps([got, sorted(imports._callbacks), machinery()]))
"""
    )
    # THEN both callbacks ran, nothing is left waiting, and the hook is gone again
    assert seen == [["lp_pkg", 2], [], "original"]


def test_a_watch_asked_for_inside_a_callback_of_the_same_module_runs_at_once():
    seen = run_fresh(
        PRELUDE
        + """
got = []


def first(module):
    got.append("first")
    imports.when_imported("lp_hook_a", lambda module: got.append("second"))


imports.when_imported("lp_hook_a", first)
import lp_hook_a
print(json.dumps(got))
"""
    )
    assert seen == ["first", "second"]


def test_the_hook_is_put_back_when_a_wrapper_under_it_is_put_back():
    # GIVEN a tool's wrapper, the probe's hook around it, and then the tool's wrapper put
    # back in place (what the probe had found: a tool bracketing the machinery twice)
    seen = run_fresh(
        PRELUDE
        + """
def tools(name, import_):
    return ORIGINAL(name, import_)


_frozen_importlib._find_and_load = tools
imports.when_imported("lp_hook_a", lambda module: None)
_frozen_importlib._find_and_load = tools
# WHEN the probe next watches a module
got = []
imports.when_imported("lp_hook_b", lambda module: got.append(module.VALUE))
import lp_hook_b
print(json.dumps([got, machinery(), imports._hook.__wrapped__ is tools]))
"""
    )
    # THEN its hook is around the tool's again, and the watch works
    assert seen == [[1], "probe", True]


def test_an_import_that_ends_while_the_watch_is_being_registered_calls_back():
    # GIVEN the module's import finishing between when_imported's first look at
    # sys.modules and its registration (another thread's import, made to happen here)
    seen = run_fresh(
        PRELUDE
        + """
hook_imports = imports._hook_imports


def hook_then_import():
    placed = hook_imports()
    import lp_hook_a
    return placed


imports._hook_imports = hook_then_import
got = []
imports.when_imported("lp_hook_a", lambda module: got.append(module.VALUE))
print(json.dumps([got, sorted(imports._callbacks)]))
"""
    )
    # THEN the callback ran all the same, and does not wait for an import to come
    assert seen == [[1], []]
