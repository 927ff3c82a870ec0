import logging
import sys
import textwrap
import time
import types

import pytest

import lifecycle_probe
from lifecycle_probe import probe
from lifecycle_probe.environment import current_environment
from lifecycle_probe.imports import handler_module_name, when_imported
from lifecycle_probe.installation import install_runtime_signals
from lifecycle_probe.records import COLD, PROACTIVE, SOURCE_HANDLER_IMPORT, SOURCE_RUNTIME
from lifecycle_probe.runtime_hooks import wrap_runtime_client
from lifecycle_probe.testing import capture_records, fresh_environment


def make_runtime_client_module(name, events):
    """A module shaped like awslambdaric's lambda_runtime_client (a class with the method)."""
    module = types.ModuleType(name)

    class BaseLambdaRuntimeClient:
        def wait_next_invocation(self):
            """Ask the Runtime API for the next event."""
            return events.pop(0)

    class LambdaRuntimeClient(BaseLambdaRuntimeClient):
        pass

    for cls in (BaseLambdaRuntimeClient, LambdaRuntimeClient):
        cls.__module__ = name
        setattr(module, cls.__name__, cls)
    return module


def test_runtime_client_wrapper_marks_init_end_and_event_arrival_once():
    fresh_environment(exact=False)
    events = ["event-1", "event-2"]
    module = make_runtime_client_module("fake_runtime_client_a", events)
    assert wrap_runtime_client(module) is True
    assert wrap_runtime_client(module) is True  # idempotent: not wrapped twice
    client = module.LambdaRuntimeClient()
    env = current_environment()
    assert current_environment().init_end_ns is None
    assert client.wait_next_invocation() == "event-1"
    assert env.init_end_source == SOURCE_RUNTIME
    first_end = env.init_end_ns
    assert first_end is not None
    assert env.event_received_ns is not None
    assert env.event_received_ns >= first_end
    assert client.wait_next_invocation() == "event-2"
    assert env.init_end_ns == first_end
    method = module.BaseLambdaRuntimeClient.__dict__["wait_next_invocation"]
    assert method.__doc__ == "Ask the Runtime API for the next event."
    assert "wait_next_invocation" not in module.LambdaRuntimeClient.__dict__


def test_runtime_errors_pass_through_and_probe_errors_do_not(monkeypatch, caplog):
    module = make_runtime_client_module("fake_runtime_client_b", [])
    wrap_runtime_client(module)
    client = module.LambdaRuntimeClient()
    with pytest.raises(IndexError):  # the runtime's own error, unchanged
        client.wait_next_invocation()

    def broken():
        raise RuntimeError("probe state gone")

    monkeypatch.setattr("lifecycle_probe.runtime_hooks.current_environment", broken)
    module2 = make_runtime_client_module("fake_runtime_client_c", ["e"])
    wrap_runtime_client(module2)
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        assert module2.LambdaRuntimeClient().wait_next_invocation() == "e"
    assert any("runtime hook" in r.getMessage() for r in caplog.records)


def test_proactive_start_measured_from_the_runtime_signal():
    # GIVEN a runtime that asked for its first event and was handed one 300 ms later
    fresh_environment(exact=False)
    module = make_runtime_client_module("fake_runtime_client_d", [])

    def blocked_until_an_event_comes(self):
        time.sleep(0.3)
        return "event"

    module.BaseLambdaRuntimeClient.wait_next_invocation = blocked_until_an_event_comes
    wrap_runtime_client(module)
    module.LambdaRuntimeClient().wait_next_invocation()

    @probe(exporter="none", proactive_init_gap_ms=200)
    def handler(event, context):
        return event

    # WHEN the handler runs, THEN the 300 ms gap > 200 ms makes it proactive
    with capture_records() as captured:
        handler({}, None)
    assert captured.starts == [PROACTIVE]
    init = captured.records[0].init
    assert init is not None
    assert init.end_source == SOURCE_RUNTIME


def write_module(tmp_path, name, body):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def importable(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    added = []

    def make(name, body):
        added.append(name)
        return write_module(tmp_path, name, body)

    yield make
    for name in added:
        sys.modules.pop(name, None)


def test_when_imported_runs_after_the_module_code_with_the_real_loader(importable):
    importable("lp_target_a", "VALUE = 41\nVALUE += 1\n")
    seen = []
    when_imported("lp_target_a", lambda m: seen.append((m.VALUE, type(m.__loader__).__name__)))
    assert seen == []
    import lp_target_a  # type: ignore[import-not-found]

    assert seen == [(42, "SourceFileLoader")]
    assert type(lp_target_a.__spec__.loader).__name__ == "SourceFileLoader"


def test_when_imported_calls_back_at_once_for_a_loaded_module():
    seen = []
    when_imported("json", lambda m: seen.append(m.__name__))
    assert seen == ["json"]


def test_failing_callback_never_breaks_the_import(importable, caplog):
    importable("lp_target_b", "X = 1\n")

    def broken(module):
        raise KeyError("hook bug")

    when_imported("lp_target_b", broken)
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        import lp_target_b  # type: ignore[import-not-found]

    assert lp_target_b.X == 1
    assert "post-import hook for lp_target_b failed" in caplog.records[0].getMessage()


def test_import_error_of_a_watched_module_propagates_unchanged(importable):
    importable("lp_target_c", "raise ImportError('missing dependency xyz')\n")
    seen: list[object] = []
    when_imported("lp_target_c", seen.append)
    with pytest.raises(ImportError, match="missing dependency xyz"):
        import lp_target_c  # type: ignore[import-not-found]  # noqa: F401
    assert seen == []


def test_install_marks_init_end_when_the_handler_module_finishes(importable, monkeypatch):
    # GIVEN the probe installed before the handler module is imported (exec-wrapper case)
    fresh_environment(exact=False)
    monkeypatch.setenv("_HANDLER", "lp_handler_mod.handler")
    importable(
        "lp_handler_mod", "import time\ntime.sleep(0.05)\ndef handler(e, c):\n    return 1\n"
    )
    assert lifecycle_probe.install(exporter="none") is True
    env = current_environment()
    assert current_environment().init_end_ns is None
    import lp_handler_mod  # type: ignore[import-not-found]  # noqa: F401

    assert env.init_end_source == SOURCE_HANDLER_IMPORT
    assert env.init_end_ns is not None
    assert env.init_end_ns - env.init_start_ns >= 50_000_000


def test_install_is_idempotent_and_warns_once_on_other_options(caplog):
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        assert lifecycle_probe.install(exporter="none") is True
        assert lifecycle_probe.install(exporter="none") is True
        assert lifecycle_probe.install(exporter="console") is True
        assert lifecycle_probe.install(exporter="console") is True
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "install() called again" in messages[0]


def test_install_disabled_does_nothing(importable, monkeypatch):
    # GIVEN the probe disabled by its variable, and a handler module not imported yet
    fresh_environment(exact=False)
    monkeypatch.setenv("LIFECYCLE_PROBE_DISABLED", "true")
    monkeypatch.setenv("_HANDLER", "lp_handler_disabled.handler")
    importable("lp_handler_disabled", "def handler(e, c):\n    return 1\n")
    # WHEN install() runs, then the handler module is imported
    assert lifecycle_probe.install() is False
    import lp_handler_disabled  # type: ignore[import-not-found]  # noqa: F401

    # THEN no hook of the probe's saw it: an installed probe would have marked INIT end
    # here (test_install_marks_init_end_when_the_handler_module_finishes). A fresh process
    # shows the rest (tests/functional/connections/test_installation.py: no finder, no
    # import hook, no wrapped runtime client, no patched client).
    assert current_environment().init_end_ns is None


def test_install_attaches_to_a_runtime_client_imported_later(importable):
    # GIVEN the probe installed first, then a runtime client module imported afterwards
    fresh_environment(exact=False)
    install_runtime_signals()
    importable(
        "lambda_runtime_client",
        """
        class LambdaRuntimeClient:
            def wait_next_invocation(self):
                return "event"
        """,
    )
    import lambda_runtime_client

    assert lambda_runtime_client.LambdaRuntimeClient().wait_next_invocation() == "event"
    assert current_environment().init_end_source == SOURCE_RUNTIME


@pytest.mark.parametrize(
    ("handler", "module"),
    [
        ("app.handler", "app"),
        ("pkg/sub/app.main", "pkg.sub.app"),
        ("a.b.c", "a.b"),
        ("nodot", None),
        (None, None),
    ],
)
def test_handler_module_name(handler, module):
    assert handler_module_name(handler) == module


def test_cold_after_exact_runtime_signal_within_gap():
    fresh_environment()

    @probe(exporter="none")
    def handler(event, context):
        return 0

    with capture_records() as captured:
        handler({}, None)
    assert captured.starts == [COLD]
    init = captured.records[0].init
    assert init is not None
    assert init.estimated is False


def test_a_presence_check_does_not_use_up_the_watch(importable):
    import importlib.util

    importable("lp_target_d", "Y = 2\n")
    seen = []
    when_imported("lp_target_d", lambda m: seen.append(m.Y))
    assert importlib.util.find_spec("lp_target_d") is not None
    assert seen == []
    import lp_target_d  # type: ignore[import-not-found]  # noqa: F401

    assert seen == [2]


def test_a_failed_import_keeps_the_watch_for_the_retry(importable, tmp_path):
    path = importable("lp_target_e", "raise ImportError('not yet')\n")
    seen = []
    when_imported("lp_target_e", lambda m: seen.append(m.__name__))
    with pytest.raises(ImportError, match="not yet"):
        import lp_target_e  # type: ignore[import-not-found]
    path.write_text("Z = 3\n")
    sys.modules.pop("lp_target_e", None)
    import importlib

    importlib.invalidate_caches()
    import lp_target_e  # noqa: F401

    assert seen == ["lp_target_e"]


def test_namespace_packages_and_their_modules_import_normally(tmp_path, monkeypatch):
    (tmp_path / "lp_ns" / "inner").mkdir(parents=True)
    (tmp_path / "lp_ns" / "inner" / "mod.py").write_text("W = 4\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[object] = []
    when_imported("lp_ns", seen.append)
    when_imported("lp_ns.inner.mod", lambda m: seen.append(m.W))
    try:
        import lp_ns.inner.mod  # type: ignore[import-not-found]

        assert lp_ns.inner.mod.W == 4
        # the namespace package is imported too (first, as the machinery imports a
        # module's parents first), though it runs no code of its own
        assert seen == [sys.modules["lp_ns"], 4]
        assert hasattr(seen[0], "__path__")
    finally:
        for name in ("lp_ns", "lp_ns.inner", "lp_ns.inner.mod"):
            sys.modules.pop(name, None)


def test_snapshot_hooks_mark_init_end_and_restore_a_new_environment(monkeypatch, caplog):
    import snapshot_restore_py

    from lifecycle_probe import runtime_hooks
    from lifecycle_probe.records import RESTORED, SOURCE_SNAPSHOT

    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    fresh_environment(exact=False, start="restored")
    monkeypatch.setattr(runtime_hooks, "_snapshot_hooks_registered", False)
    before = list(snapshot_restore_py.get_before_snapshot())
    after = list(snapshot_restore_py.get_after_restore())
    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", before)
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", after)
    assert runtime_hooks.register_snapshot_hooks() is True
    env = current_environment()
    old_id = env.environment_id
    # WHEN the runtime runs the hooks around the snapshot, as awslambdaric does
    for func, args, kwargs in snapshot_restore_py.get_before_snapshot():
        func(*args, **kwargs)
    assert env.init_end_source == SOURCE_SNAPSHOT
    for func, args, kwargs in snapshot_restore_py.get_after_restore():
        func(*args, **kwargs)
    # THEN a new environment starts at the restore, keeping the INIT before the snapshot
    assert env.environment_id != old_id
    assert (env.restored, env.seq, env.init_end_source) == (True, 0, SOURCE_SNAPSHOT)
    assert env.restore_start_ns is not None
    assert env.init_end_ns is not None
    assert env.restore_start_ns >= env.init_end_ns
    invocation = env.begin_invocation("r", 10**9, env.restore_start_ns + 1000)
    assert invocation.facts().start == RESTORED
    assert invocation.restore is not None
    assert invocation.restore.start_ns == env.restore_start_ns

    # AND a hook that fails never fails the restore
    def broken():
        raise RuntimeError("state gone")

    monkeypatch.setattr(runtime_hooks, "current_environment", broken)
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        for func, args, kwargs in snapshot_restore_py.get_after_restore():
            func(*args, **kwargs)
    assert "after-restore hook failed" in caplog.text


def test_snap_start_without_restore_hook_is_still_restored():
    fresh_environment(start="restored")

    @probe(exporter="none")
    def handler(event, context):
        return 0

    with capture_records() as captured:
        handler({}, None)
    assert captured.starts == ["restored"]
