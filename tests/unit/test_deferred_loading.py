"""What INIT does not load: modules and records the probe imports on their first use.

Each case runs a fresh interpreter, since this one has imported everything long ago. The
deferred modules are the records a healthy INIT never builds (``rare_records``), the
own-thread registry (``probe_threads``) when nothing of the probe's runs on a thread of its
own yet, the event's trigger (``triggers``: only sinks that read the event need it) and the
/tmp and memory watch (``resources``: first needed by the first record, after the
response). When they do load, the import is the probe's, never recorded as the function's.
"""

from __future__ import annotations

import textwrap

from tests.fresh_process import CAPTURING_SINK, run_fresh

DEFERRED = (
    "lifecycle_probe.rare_records",
    "lifecycle_probe.probe_threads",
    "lifecycle_probe.triggers",
    "lifecycle_probe.resources",
)


LOADED = "[m for m in sys.modules if m.startswith('lifecycle_probe')]"


def test_install_loads_none_of_them():
    loaded = run_fresh(
        f"""
        import json, sys
        import lifecycle_probe
        assert lifecycle_probe.install() is True
        print(json.dumps({LOADED}))
        """
    )
    assert "lifecycle_probe.installation" in loaded  # (install() ran from there)
    assert [m for m in loaded if m in DEFERRED] == []


def test_an_emf_probe_at_init_loads_neither_the_rare_records_nor_triggers_nor_resources():
    loaded = run_fresh(
        f"""
        import json, sys
        from lifecycle_probe import probe

        handler = probe(exporter="emf")(lambda event, context: "ok")
        print(json.dumps({LOADED}))
        """
    )
    assert "lifecycle_probe.sinks.emf" in loaded
    assert [m for m in loaded if m in DEFERRED] == ["lifecycle_probe.probe_threads"]


def test_the_first_record_loads_what_it_needs_as_the_probes_imports():
    # GIVEN a sink that reads the event (console), flushing on the caller's thread
    records = run_fresh(
        CAPTURING_SINK
        + textwrap.dedent(
            """
        import io, json, sys
        from lifecycle_probe import probe
        handler = probe(exporter="console", flush="sync")(lambda event, context: "ok")
        sys.stdout = io.StringIO()  # (the console sink's lines)
        before = [m for m in ("lifecycle_probe.triggers", "lifecycle_probe.resources")
                  if m in sys.modules]
        handler({"requestContext": {"http": {"method": "GET"}}, "rawPath": "/"}, None)
        handler({}, None)
        sys.stdout = sys.__stdout__
        init_imports = [i.module for i in seen[0].init.imports]
        print(json.dumps([before, init_imports] + [
            [r.trigger, r.rss_bytes is not None, [i.module for i in r.imports]] for r in seen
        ]))
        """
        )
    )
    # THEN nothing of them was there before, the records carry the trigger and the memory
    # reading they need them for, and neither import is in a record: not in the first
    # invocation's (the trigger is read before it begins, while INIT's imports are still
    # being recorded), not in INIT's
    before, init_imports, first, second = records
    assert before == []
    assert [m for m in init_imports if m.startswith("lifecycle_probe")] == []
    assert first == ["http", True, []]
    assert second == ["other", True, []]


def test_a_snapstart_init_loads_the_rare_records_before_the_snapshot():
    # GIVEN SnapStart, whose INIT is taken before the snapshot and so free at restore
    init_imports, loaded = run_fresh(
        f"""
        import json, sys
        import lifecycle_probe
        from lifecycle_probe.imports import active_tracer

        lifecycle_probe.install()
        import fractions  # the function's own INIT import
        print(json.dumps([[r.module for r in active_tracer().take_init()], {LOADED}]))
        """,
        AWS_LAMBDA_INITIALIZATION_TYPE="snap-start",
    )
    # THEN what the first invocation after a restore needs is in memory before the
    # snapshot (the restore's record, the trigger, the /tmp and memory watch), and loading
    # it (with the hazard recording) was the probe's import, not the function's
    assert "lifecycle_probe.rare_records" in loaded
    assert "lifecycle_probe.triggers" in loaded
    assert "lifecycle_probe.resources" in loaded
    assert "fractions" in init_imports
    assert [m for m in init_imports if m.startswith("lifecycle_probe")] == []


def test_a_failed_init_loads_its_record_as_the_probes_import(tmp_path):
    # GIVEN a function module that raises at INIT, under the zero-code handler
    (tmp_path / "broken.py").write_text("import fractions\nraise RuntimeError('boom')\n")
    failure = run_fresh(
        CAPTURING_SINK
        + textwrap.dedent(
            """
        import io, json, sys
        try:
            import lifecycle_probe.handler
        except BaseException:
            pass
        print(json.dumps([[f.error_type, [i.module for i in f.imports]] for f in failures]))
        """
        ),
        LIFECYCLE_PROBE_HANDLER="broken.handler",
        LIFECYCLE_PROBE_EXPORTER="none",
        PYTHONPATH=str(tmp_path),
    )
    ((error_type, imports),) = failure
    assert error_type == "RuntimeError"
    assert "fractions" in imports
    assert [m for m in imports if m.startswith("lifecycle_probe")] == []


def test_what_building_a_record_imports_is_the_probes_on_the_callers_thread(tmp_path):
    # GIVEN a function that leaks its event into a global, flushing before the response
    (tmp_path / "leaky_app.py").write_text(
        textwrap.dedent(
            """
            from lifecycle_probe import probe

            LAST_ORDER = None


            @probe(exporter="emf", flush="sync")
            def handler(event, context):
                global LAST_ORDER
                LAST_ORDER = event["order_id"]
                return "ok"
            """
        )
    )
    records = run_fresh(
        CAPTURING_SINK
        + textwrap.dedent(
            """
        import io, json, sys
        import leaky_app

        sys.stdout = io.StringIO()  # (the EMF and warning lines)
        leaky_app.handler({"order_id": "order-5550001"}, None)
        leaky_app.handler({"order_id": "order-5550002"}, None)
        sys.stdout = sys.__stdout__
        print(json.dumps([
            [[e.name for e in r.events], [i.module for i in r.imports]] for r in seen
        ]))
        """
        ),
        PYTHONPATH=str(tmp_path),
        LAMBDA_TASK_ROOT=str(tmp_path),
    )
    # THEN the leak was found (its warning line needed lifecycle_probe.loglines, imported
    # on the caller's thread while the first record was built) and no record holds that
    # import as the function's
    (first_events, first_imports), (_, second_imports) = records
    assert first_events == ["lifecycle.global.leak"]
    assert first_imports == second_imports == []


def test_an_import_while_the_registry_is_half_loaded_is_the_functions_and_succeeds():
    # GIVEN install() alone, and the registry of the probe's threads in sys.modules with
    # its body not run yet (what another thread importing it for the first time leaves)
    imports = run_fresh(
        """
        import json, sys, types
        import lifecycle_probe
        from lifecycle_probe.imports import active_tracer

        lifecycle_probe.install()
        sys.modules["lifecycle_probe.probe_threads"] = types.ModuleType(
            "lifecycle_probe.probe_threads"
        )
        import fractions  # WHEN the function imports meanwhile
        print(json.dumps([r.module for r in active_tracer().take_init()]))
        """
    )
    # THEN its import succeeds and is recorded as the function's
    assert "fractions" in imports
