"""One way to install connection tracking, and options that mean what they say.

``install()``, ``@probe`` and importing ``probe`` all go through
``installation.install_connection_tracking``. Nothing is patched, and wrapt is not
imported, until a client is imported; ``disabled`` leaves nothing behind at all;
``connections=False`` leaves clients unpatched, or unreported when they were patched
already; the process-wide options refuse a second, different value with one warning.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from lifecycle_probe import probe
from lifecycle_probe.connections import tracking
from tests.functional.connections.support import Function, track_connections
from tests.services import require_module


def run_fresh(code, *, cwd=None, env=None):
    """Run ``code`` in a fresh interpreter; what it printed last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


LAZY = """
    import json, sys
    import lifecycle_probe
    lifecycle_probe.install(exporter="none")
    lifecycle_probe.install(exporter="none")
    before = "wrapt" in sys.modules, "{module}" in sys.modules
    import {module}
    print(json.dumps([*before, "wrapt" in sys.modules]))
"""


@pytest.mark.parametrize("module", ["psycopg2", "pymysql", "redis"])
def test_nothing_is_patched_until_the_client_is_imported(module):
    # GIVEN the client library installed
    require_module(module)
    # WHEN install() runs in a fresh process, then the client is imported
    wrapt_before, client_before, wrapt_after = run_fresh(LAZY.format(module=module))
    # THEN wrapt came with the client's patch, not with install()
    assert (wrapt_before, client_before, wrapt_after) == (False, False, True)


def test_installing_twice_patches_once():
    # GIVEN tracking installed once, redis imported and patched
    redis = require_module("redis")
    track_connections()
    # WHEN it is installed again, by every path
    track_connections(stale_idle_s=1.0)
    probe(exporter="none")(lambda event, context: None)
    # THEN redis-py's methods are wrapped once
    wrapped = redis.connection.AbstractConnection.read_response.__wrapped__
    assert not hasattr(wrapped, "__wrapped__")


BOTOCORE_LAZY = """
    import json, sys
    import lifecycle_probe
    lifecycle_probe.install(exporter="none")
    import botocore
    lazy = "botocore.endpoint" not in sys.modules and "wrapt" not in sys.modules
    import botocore.endpoint
    import wrapt
    loop = botocore.endpoint.Endpoint.__dict__["_send_request"]
    print(json.dumps([
        lazy,
        isinstance(loop, wrapt.FunctionWrapper),
        isinstance(loop.__wrapped__, wrapt.FunctionWrapper),
    ]))
"""


def test_botocores_retry_loop_is_patched_only_once_its_endpoint_is_imported():
    # GIVEN the probe installed in a fresh process, before botocore
    require_module("botocore")
    # WHEN botocore, then botocore.endpoint, are imported
    lazy, patched, patched_twice = run_fresh(BOTOCORE_LAZY)
    # THEN importing botocore patched nothing, and its endpoint's retry loop once
    assert (lazy, patched, patched_twice) == (True, True, False)


# -- what a set-up leaves behind, seen from a fresh process ------------------------------------
RUNTIME_CLIENT = """
class LambdaRuntimeClient:
    def wait_next_invocation(self):
        return "event"
"""

LEFT_BEHIND = """
    import json, sys, types
    {setup}
    import psycopg2, urllib3
    import lambda_runtime_client

    def patched(owner, name):
        value = vars(owner)[name]
        # The library's own function, or something put in its place (a wrapt proxy, a
        # wrapper marked with __wrapped__).
        return type(value) is not types.FunctionType or hasattr(value, "__wrapped__")

    pool = urllib3.connectionpool.HTTPConnectionPool
    import _frozen_importlib
    imports = sys.modules.get("lifecycle_probe.imports")
    print(json.dumps({{
        "psycopg2": patched(psycopg2, "connect"),
        "urllib3": [
            patched(pool, "urlopen"),
            patched(pool, "_make_request"),
            patched(pool, "_put_conn"),
            patched(urllib3.connection.HTTPConnection, "connect"),
            patched(urllib3.connectionpool, "is_connection_dropped"),
        ],
        "wrapt": "wrapt" in sys.modules,
        "finders": [
            type(f).__name__ for f in sys.meta_path
            if type(f).__module__.startswith("lifecycle_probe")
        ],
        "runtime client": patched(lambda_runtime_client.LambdaRuntimeClient,
                                  "wait_next_invocation"),
        "import hook": hasattr(_frozen_importlib._find_and_load, "__wrapped__"),
        "watches": [] if imports is None else sorted(imports._callbacks),
        "tracing": imports is not None and imports.active_tracer() is not None,
    }}))
"""

NOTHING = {
    "psycopg2": False,
    "urllib3": [False] * 5,
    "wrapt": False,
    "finders": [],
    "runtime client": False,
    "import hook": False,
    "watches": [],
    "tracing": False,
}

# What an enabled probe still watches for once the set-up above has run: the runtime
# client's awslambdaric name (the test's is the managed runtimes' flat one), and the
# clients not imported.
WAITING = ["awslambdaric.lambda_runtime_client", "botocore", "psycopg", "pymysql", "redis"]

INSTALL_DISABLED = """
import lifecycle_probe
lifecycle_probe.install(disabled=True)
from lifecycle_probe import probe
handler = probe(lambda event, context: None)
"""

PROBE = """
from lifecycle_probe import probe
handler = probe(lambda event, context: None)
"""

INSTALL = """
import lifecycle_probe
lifecycle_probe.install(exporter="none")
"""


@pytest.fixture
def left_behind(tmp_path):
    """Run a set-up in a fresh process, then import the clients and a runtime client:
    what the probe patched, wrapped and put on ``sys.meta_path``."""
    require_module("psycopg2")
    require_module("urllib3")
    (tmp_path / "lambda_runtime_client.py").write_text(RUNTIME_CLIENT)

    def run(setup, **variables):
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("LIFECYCLE_PROBE_")
        }
        env["PYTHONPATH"] = f"{tmp_path}:{env.get('PYTHONPATH', '')}".rstrip(":")
        env.update(variables)
        code = LEFT_BEHIND.format(setup=textwrap.indent(setup, "    ").strip())
        return run_fresh(code, cwd=tmp_path, env=env)

    return run


def test_an_installed_probe_patches_wraps_and_hooks(left_behind):
    # GIVEN the probe installed as usual, the yardstick of the tests below
    # WHEN the clients and the runtime client are imported
    seen = left_behind(INSTALL)
    # THEN everything the disabled probe must not leave is there
    assert seen == {
        "psycopg2": True,
        "urllib3": [True] * 5,
        "wrapt": True,
        # (no finder: the one import hook wraps the machinery's _find_and_load, and
        # watches the clients not imported yet)
        "finders": [],
        "runtime client": True,
        "import hook": True,
        "watches": WAITING,
        "tracing": True,
    }


def test_install_disabled_leaves_nothing_behind(left_behind):
    # GIVEN install(disabled=True), then probe imported and applied
    # WHEN psycopg2, urllib3 and the runtime client are imported
    seen = left_behind(INSTALL_DISABLED)
    # THEN all are the libraries' own, and no finder or tracer of the probe's is in place
    assert seen == NOTHING


def test_the_disabled_variable_leaves_nothing_behind(left_behind):
    # GIVEN LIFECYCLE_PROBE_DISABLED=1 and a handler decorated with @probe
    seen = left_behind(PROBE, LIFECYCLE_PROBE_DISABLED="1")
    # THEN nothing is patched, wrapped or hooked
    assert seen == NOTHING


@pytest.mark.parametrize(
    "setup",
    [
        'import lifecycle_probe\nlifecycle_probe.install(exporter="none", connections=False)',
        'from lifecycle_probe import probe\nprobe(exporter="none", connections=False)(print)',
    ],
    ids=["install", "probe"],
)
def test_connections_false_leaves_the_clients_unpatched(left_behind, setup):
    # GIVEN connection tracking switched off by an argument (after importing probe, whose
    # import alone would have had the clients patched)
    seen = left_behind(setup)
    # THEN the clients are their own; the rest of the probe is in place
    assert (seen["psycopg2"], seen["urllib3"], seen["wrapt"]) == (False, [False] * 5, False)
    assert seen["runtime client"] is True


def test_install_disabled_after_importing_probe_takes_down_what_the_import_put_in_place(
    left_behind,
):
    # GIVEN probe imported first (its import puts the finder, import tracing and the
    # runtime client's watch in place), then install() asked to disable the probe
    seen = left_behind(
        "from lifecycle_probe import probe\n"
        "import lifecycle_probe\n"
        "lifecycle_probe.install(disabled=True)"
    )
    # THEN no finder, no tracing, and the clients and runtime client imported afterwards
    # are their own
    assert seen == NOTHING


def test_install_disabled_unwraps_a_runtime_client_loaded_before_probe(left_behind):
    # GIVEN the runtime client loaded first, so that importing probe wrapped it at once
    seen = left_behind(
        "import lambda_runtime_client\n"
        "from lifecycle_probe import probe\n"
        "wrapped = lambda_runtime_client.LambdaRuntimeClient.wait_next_invocation\n"
        "assert wrapped.__lifecycle_probe_wrapped__\n"
        "import lifecycle_probe\n"
        "lifecycle_probe.install(disabled=True)"
    )
    # THEN install(disabled=True) gave it its own method back
    assert seen == NOTHING


DISABLED_PROBE = """
from lifecycle_probe import probe

@probe(disabled=True)
def handler(event, context):
    return None
"""


def test_a_disabled_probe_alone_takes_down_what_the_import_put_in_place(left_behind):
    # GIVEN probe imported, and the process's only probe asks to be disabled
    # WHEN the clients and the runtime client are imported afterwards
    seen = left_behind(DISABLED_PROBE)
    # THEN the explicit disabled=True wins: nothing is patched, wrapped, hooked or traced
    assert seen == NOTHING


def test_a_disabled_probe_alone_patches_none_of_the_tracked_clients(tmp_path):
    # GIVEN every tracked client library installed, and a lone disabled probe
    for module in ("psycopg2", "psycopg", "pymysql", "redis", "urllib3", "botocore"):
        require_module(module)
    code = DISABLED_PROBE + textwrap.dedent(
        """
        import json, sys
        import psycopg2, psycopg, pymysql, redis, urllib3, botocore, botocore.endpoint
        print(json.dumps(["wrapt" in sys.modules, str(redis.Redis.execute_command)]))
        """
    )
    # WHEN all of them are imported afterwards, in a fresh process
    wrapt_loaded, execute_command = run_fresh(code, cwd=tmp_path)
    # THEN none was patched: the patches come with wrapt, which nobody imported
    assert wrapt_loaded is False
    assert execute_command.startswith("<function Redis.execute_command")


def test_a_disabled_probe_leaves_an_enabled_probes_hooks_in_place(left_behind):
    # GIVEN an enabled probe, then a disabled one in the same process
    seen = left_behind(
        "from lifecycle_probe import probe\n"
        'probe(exporter="none")(lambda event, context: None)\n'
        "probe(disabled=True)(lambda event, context: None)"
    )
    # THEN the enabled probe keeps everything it relies on
    assert (seen["import hook"], seen["watches"]) == (True, WAITING)
    assert (seen["psycopg2"], seen["runtime client"], seen["tracing"]) == (True, True, True)


def test_an_enabled_probe_after_a_disabled_one_puts_the_hooks_back(left_behind):
    # GIVEN a lone disabled probe took the hooks down, then an enabled probe is applied
    seen = left_behind(
        DISABLED_PROBE.strip() + '\nprobe(exporter="none")(lambda event, context: None)'
    )
    # THEN the enabled probe has its import hook, tracing, patched clients and runtime client
    assert (seen["import hook"], seen["watches"]) == (True, WAITING)
    assert (seen["psycopg2"], seen["urllib3"]) == (True, [True] * 5)
    assert (seen["runtime client"], seen["tracing"]) == (True, True)


@pytest.mark.parametrize("connections", [True, False])
def test_connections_false_reports_nothing_for_a_client_patched_already(postgres, connections):
    # GIVEN psycopg2 patched already (the tracking fixture), and a handler that asks for
    # connections on or off, and for every reuse to be a risk
    handler = Function(connections=connections, stale_idle_s=0)
    connection = postgres()
    # WHEN the connection made in the first invocation is reused in the second
    handler.invoke(lambda: connection.cursor().execute("SELECT 1"))
    handler.invoke(lambda: connection.cursor().execute("SELECT 1"))
    # THEN only tracking that is on reports it
    outcomes = [event["lifecycle.connection.outcome"] for event in handler.stale_events()]
    assert outcomes == (["risk"] if connections else [])


# -- process-wide options ----------------------------------------------------------------------
def test_a_second_handler_asking_another_process_wide_value_gets_one_warning(caplog):
    # GIVEN a handler that asks for a risk threshold of 30 s
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        probe(exporter="none", stale_idle_s=30)(print)
        # WHEN two more ask for 90 s, and one for 30 s
        probe(exporter="none", stale_idle_s=90)(print)
        probe(exporter="none", stale_idle_s=90)(print)
        probe(exporter="none", stale_idle_s=30)(print)
    # THEN one warning names the option, the value kept and the value refused
    [warning] = [r.getMessage() for r in caplog.records]
    assert "stale_idle_s" in warning
    assert "30.0 stays in force" in warning
    assert "90.0 asked for later is refused" in warning
    # AND the first value is the one in force
    assert tracking.stale_idle_s() == 30.0


def test_an_argument_beats_the_value_of_a_variable_or_default_without_a_warning(
    caplog, monkeypatch
):
    # GIVEN a handler that took the threshold from the variable (nothing asked)
    monkeypatch.setenv("LIFECYCLE_PROBE_STALE_IDLE_S", "45")
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        probe(exporter="none")(print)
        # WHEN a later handler asks for another value as an argument
        probe(exporter="none", stale_idle_s=5)(print)
    # THEN the argument is in force, and nobody asked for the value it replaced
    assert tracking.stale_idle_s() == 5.0
    assert caplog.records == []


def test_install_options_are_the_defaults_of_later_handlers_not_a_conflict(caplog):
    # GIVEN install() asked for tracking and a threshold, and a handler that says nothing
    import lifecycle_probe

    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        lifecycle_probe.install(exporter="none", connections=True, stale_idle_s=12)
        probe(exporter="none")(print)
        # WHEN another asks for connections off, against install()'s on
        probe(exporter="none", connections=False)(print)
    # THEN the threshold holds silently, and the refused switch is named once
    assert tracking.stale_idle_s() == 12.0
    [warning] = [r.getMessage() for r in caplog.records]
    assert "connections" in warning
    assert "False asked for later is refused" in warning


AWSLAMBDARIC = """
    import json
    {setup}
    from awslambdaric.lambda_runtime_client import BaseLambdaRuntimeClient
    method = BaseLambdaRuntimeClient.wait_next_invocation
    print(json.dumps(getattr(method, "__lifecycle_probe_wrapped__", False)))
"""


@pytest.mark.parametrize(
    ("setup", "wrapped"),
    [
        ("from lifecycle_probe import probe", True),
        (
            "from lifecycle_probe import probe\n"
            "import lifecycle_probe\n"
            "lifecycle_probe.install(disabled=True)",
            False,
        ),
        ("from lifecycle_probe import probe\nprobe(disabled=True)(print)", False),
    ],
    ids=["probe imported (yardstick)", "then install disabled", "then probe disabled"],
)
def test_awslambdarics_runtime_client_imported_after_a_disabled_probe_is_its_own(
    tmp_path, setup, wrapped
):
    # GIVEN the real runtime client of AWS, imported after the set-up in a fresh process
    require_module("awslambdaric")
    code = textwrap.dedent(AWSLAMBDARIC).format(setup=setup)
    # THEN only a probe that stays enabled wraps its request for events
    assert run_fresh(code, cwd=tmp_path) is wrapped
