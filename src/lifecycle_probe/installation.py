"""``lifecycle_probe.install()``: put the hooks in place as early as possible, once.

Called first thing (by the layer's exec wrapper, or by the user before any other import),
it sees everything that follows: the runtime client being imported, the handler module
finishing its import. ``@probe`` calls :func:`install_runtime_signals` itself, so the
common case, a probe imported from inside the handler module, still gets an exact INIT end.
"""

from __future__ import annotations

import os

from lifecycle_probe._safe import guard, report_failure, warn_once
from lifecycle_probe.config import Config
from lifecycle_probe.environment import current_environment
from lifecycle_probe.imports import handler_module_name, start_import_tracing, when_imported
from lifecycle_probe.records import SOURCE_HANDLER_IMPORT
from lifecycle_probe.runtime_hooks import (
    RUNTIME_CLIENT_MODULES,
    attach_to_loaded_runtime,
    register_snapshot_hooks,
    wrap_runtime_client,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

_signals_installed = False
_installed_with: Config | None = None
# The options install() was called with: the defaults of every later ``@probe``.
_installed_options: dict[str, Any] = {}


def installed_options() -> dict[str, Any]:
    """The explicit options of the first ``install()`` call (empty if none)."""
    return _installed_options


def install_runtime_signals() -> None:
    """Watch the runtime for INIT end and SnapStart hooks (idempotent, never raises)."""
    global _signals_installed
    if _signals_installed:
        return
    _signals_installed = True
    with guard("import tracing"):
        start_import_tracing(_during_init)
    with guard("runtime signals"):
        register_snapshot_hooks()
        if not attach_to_loaded_runtime():
            # The probe came first: wrap the runtime client when it is imported.
            for name in RUNTIME_CLIENT_MODULES:
                when_imported(name, _wrap_when_imported)


# Client libraries whose connections are tracked: each is patched by the module of the
# same name, with a leading underscore, in lifecycle_probe.connections. botocore's
# connections are urllib3's; its own patch makes its retries settle their stale reuses.
TRACKED_CLIENTS = ("psycopg2", "psycopg", "pymysql", "redis", "urllib3", "botocore")


def install_connection_hooks(config: Config) -> None:
    """Track database and cache connections for stale reuse, when the config says so.

    Only post-import hooks here: the tracking code is imported with the first client
    library a function imports, not at INIT for functions that use none.
    """
    if not config.connections:
        return
    stale_idle_s = config.stale_idle_s

    def track(module: ModuleType) -> None:
        from lifecycle_probe.connections import set_stale_idle_s, track_client

        set_stale_idle_s(stale_idle_s)
        track_client(module)

    with guard("connection tracking"):
        for client in TRACKED_CLIENTS:
            when_imported(client, track)


# Powertools' EMF provider, whose ColdStart the probe's must not double (coldstart.py).
POWERTOOLS_EMF_MODULE = "aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch"
_PATCHED = "__lifecycle_probe_cold_start__"
_powertools_watched = False


def coordinate_powertools_cold_start() -> None:
    """Make Powertools' ``ColdStart`` and the probe's count once where they are the same
    metric (idempotent; nothing is imported or patched until Powertools' EMF provider is)."""
    global _powertools_watched
    if _powertools_watched:
        return
    _powertools_watched = True
    with guard("Powertools ColdStart hook"):
        when_imported(POWERTOOLS_EMF_MODULE, _patch_powertools_cold_start)


def _patch_powertools_cold_start(module: ModuleType) -> None:
    with guard("Powertools ColdStart hook"):
        provider = module.AmazonCloudWatchEMFProvider
        original = provider.add_cold_start_metric
        if getattr(original, _PATCHED, False):
            return

        def add_cold_start_metric(self: Any, context: Any) -> Any:
            try:
                from aws_lambda_powertools.metrics.functions import (
                    resolve_cold_start_function_name,
                )

                from lifecycle_probe.coldstart import count_once

                # The metric Powertools is about to write, named as it names it.
                function_name = resolve_cold_start_function_name(
                    function_name=self.function_name, context=context
                )
                service = str(self.service) if self.service else None
                environment_id = current_environment().environment_id
                if not count_once(str(self.namespace), function_name, service, environment_id):
                    return None  # the probe wrote this very ColdStart already
            except Exception as exc:
                report_failure("Powertools ColdStart coordination", exc)
            return original(self, context)

        setattr(add_cold_start_metric, _PATCHED, True)
        add_cold_start_metric.__wrapped__ = original  # type: ignore[attr-defined]
        provider.add_cold_start_metric = add_cold_start_metric


def _during_init() -> bool:
    # An import belongs to INIT until the environment's first invocation begins.
    return current_environment().seq == 0


def _wrap_when_imported(module: ModuleType) -> None:
    wrap_runtime_client(module)


def _mark_handler_imported(module: ModuleType) -> None:
    current_environment().mark_init_end(SOURCE_HANDLER_IMPORT)


def install(**options: Any) -> bool:
    """Install the probe's hooks; safe to call more than once and outside Lambda.

    Options are those of ``@probe`` (see README) and become the defaults of every later
    ``@probe``. Returns True when the hooks are in place, False when the probe is
    disabled (or could not be installed: the reason is logged). Never raises.
    """
    try:
        return _install(options)
    except Exception as exc:
        report_failure("install()", exc)
        return False


def _install(options: dict[str, Any]) -> bool:
    global _installed_with
    config = Config.resolve(**options)
    if _installed_with is not None:
        if config != _installed_with:
            warn_once(
                "install:twice",
                "lifecycle_probe: install() called again with other options; "
                "the first call's options stay in force",
            )
        return not _installed_with.disabled
    _installed_with = config
    _installed_options.update(options)
    if config.disabled:
        return False
    install_runtime_signals()
    install_connection_hooks(config)
    with guard("handler import hook"):
        handler = os.environ.get("LIFECYCLE_PROBE_HANDLER") or os.environ.get("_HANDLER")
        module_name = handler_module_name(handler)
        if module_name is not None and module_name != "lifecycle_probe.handler":
            # A fallback signal of INIT end for runtimes whose client we cannot wrap.
            when_imported(module_name, _mark_handler_imported)
    return True


def reset_installation() -> None:
    """Forget that install() ran (tests simulating a new process)."""
    global _installed_with, _signals_installed
    _installed_with = None
    _signals_installed = False
    _installed_options.clear()
    from lifecycle_probe import coldstart

    coldstart.forget()
