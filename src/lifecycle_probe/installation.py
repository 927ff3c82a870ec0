"""``lifecycle_probe.install()``: put the hooks in place as early as possible, once.

Called first thing (by the layer's exec wrapper, or by the user before any other import),
it sees everything that follows: the runtime client being imported, the handler module
finishing its import. Importing ``probe`` and ``@probe`` call
:func:`install_runtime_signals` themselves, so the common case, a probe imported from
inside the handler module, still gets an exact INIT end.

Connection tracking is put in place here too, one way for every caller
(:func:`install_connection_tracking`); its options hold for the whole process. The
``connections`` package never imports this module: the hooks here import it once a
client library is imported.
"""

from __future__ import annotations

import sys

from lifecycle_probe._safe import guard, report_failure, warn_once
from lifecycle_probe.config import Config, variable
from lifecycle_probe.environment import current_environment
from lifecycle_probe.imports import (
    handler_module_name,
    remove_post_import_hooks,
    start_import_tracing,
    stop_import_tracing,
    when_imported,
)
from lifecycle_probe.records import SOURCE_HANDLER_IMPORT
from lifecycle_probe.runtime_hooks import (
    RUNTIME_CLIENT_MODULES,
    attach_to_loaded_runtime,
    register_snapshot_hooks,
    unwrap_runtime_clients,
    wrap_runtime_client,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import ModuleType
    from typing import Any

__all__ = [
    "install",
    "install_at_probe_import",
    "install_connection_tracking",
    "install_for_probe",
    "install_runtime_signals",
    "installed_options",
    "probe_disabled",
    "reset_installation",
    "watch_powertools_cold_start",
]

_signals_installed = False
_installed_with: Config | None = None
# The options install() was called with: the defaults of every later ``@probe``.
_installed_options: dict[str, Any] = {}
# Whether an enabled ``install()`` or ``@probe`` asked for the hooks. Importing ``probe``
# puts them in place before anyone asked; a disabled request takes them down again only
# while this is False (no enabled probe relies on them).
_requested = False
# Whether a request wants records exported (an exporter other than ``none``): only then
# does connection tracking note stale reuses (README "Configuration": ``none`` writes
# nothing, not even the log lines). Process-wide, like the tracking itself.
_exporting = False


def installed_options() -> dict[str, Any]:
    """The explicit options of the first ``install()`` call (empty if none)."""
    return _installed_options


def install_for_probe(config: Config, asked: Mapping[str, Any]) -> None:
    """What an enabled ``@probe`` puts in place (idempotent, never raises): the runtime
    signals and connection tracking, as ``config`` and the arguments ``asked`` say."""
    global _requested, _exporting
    _requested = True
    if "none" not in config.exporter:
        _exporting = True
    install_runtime_signals()
    install_connection_tracking(config, asked)


def probe_disabled() -> None:
    """A ``@probe`` resolved to disabled: unless an enabled probe or ``install()`` asked
    for the hooks, take down what importing ``probe`` put in place (never raises)."""
    if not _requested:
        _withdraw()


def _withdraw() -> None:
    """Take down the hooks importing ``probe`` put in place: the import hook with its
    pending post-import callbacks and import tracing, the runtime client's wrapper.

    A client library patched already stays patched (undoing a patch under code that may
    hold its functions is riskier than leaving it): its tracking reports nothing. An
    enabled ``@probe`` applied later puts everything back in place.
    """
    global _signals_installed, _clients_watched
    with guard("disabled probe"):
        remove_post_import_hooks()
        stop_import_tracing()
        unwrap_runtime_clients()
        _signals_installed = False
        _clients_watched = False
        _process_wide.clear()
        tracking = sys.modules.get("lifecycle_probe.connections.tracking")
        if tracking is not None:
            tracking.configure(tracking.stale_idle_s(), reporting=False, exporting=False)


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


# -- connection tracking --------------------------------------------------------------------
# Client libraries whose connections are tracked: each is patched by the module of the
# same name, with a leading underscore, in lifecycle_probe.connections, once it is
# imported. botocore's connections are urllib3's; its own patch makes its retries settle
# their stale reuses.
TRACKED_CLIENTS = ("psycopg2", "psycopg", "pymysql", "redis", "urllib3", "botocore")

# Options that can only hold for the whole process, however many handlers are probed:
# a client library is patched once, and its connections serve every handler; a process
# has one /tmp, watched by one resource watch (resources.py, which reads its share here
# when it is first needed, after the first invocation). Each maps to (the value in force,
# whether an argument asked for it). Held by install_connection_tracking, which every
# enabled install() and @probe, and importing ``probe``, go through.
PROCESS_WIDE = ("connections", "stale_idle_s", "tmp_warn_share")
_process_wide: dict[str, tuple[Any, bool]] = {}
# Whether the clients are watched for (set once the first caller wants tracking).
_clients_watched = False


def process_wide_value(name: str) -> Any:
    """The value in force of the process-wide option ``name`` (None until a caller held one)."""
    held = _process_wide.get(name)
    return None if held is None else held[0]


def install_connection_tracking(config: Config, asked: Mapping[str, Any] | None = None) -> None:
    """Track the clients' connections for stale reuse, as ``config`` says; never raises.

    The one way tracking is put in place: by ``install()``, ``@probe`` and importing
    ``probe``. ``asked`` holds the options the caller was given as arguments. Tracking is
    process-wide (``PROCESS_WIDE``): the first value stays in force, except that a value
    asked for as an argument beats one that came from a variable or a default (DESIGN.md
    §2); a later argument asking for another value is refused with one warning.

    Only post-import hooks here: the tracking code and ``wrapt`` are imported with the
    first client library a function imports, not at INIT for functions that use none.
    """
    asked = asked or {}
    with guard("connection tracking"):
        for name in PROCESS_WIDE:
            _hold(name, getattr(config, name), asked)
        _configure_loaded_tracking()
        _configure_loaded_watch()
        global _clients_watched
        if _tracking_wanted() and not _clients_watched:
            _clients_watched = True
            for client in TRACKED_CLIENTS:
                when_imported(client, _track_client)


def _hold(name: str, value: Any, asked: Mapping[str, Any]) -> Any:
    """Keep ``value`` of the process-wide option ``name`` if it is the first, or asked
    for over one that was not; the value in force."""
    explicit = asked.get(name) is not None  # as in Config.resolve: None is not given
    held = _process_wide.get(name)
    if held is None or (explicit and not held[1]):
        _process_wide[name] = (value, explicit)
        return value
    kept = held[0]
    if explicit and held[1] and kept != value:
        warn_once(
            f"process-wide:{name}:{value!r}",
            "lifecycle_probe: %s is one per process: %r stays in force, %r asked for "
            "later is refused",
            name,
            kept,
            value,
        )
    return kept


def _tracking_wanted() -> bool:
    held = _process_wide.get("connections")
    return held is not None and bool(held[0])


def _configure_loaded_tracking() -> None:
    # The tracking module is only there once a client was patched: it learns the values
    # in force then (_track_client), and of any change from here on.
    tracking = sys.modules.get("lifecycle_probe.connections.tracking")
    if tracking is not None and "stale_idle_s" in _process_wide:
        tracking.configure(
            _process_wide["stale_idle_s"][0], reporting=_tracking_wanted(), exporting=_exporting
        )


def _configure_loaded_watch() -> None:
    # The resource watch is only there once a record was built: it learns the share in
    # force then (resources.resource_watch), and of a change from here on (an argument
    # asking for one where a variable or the default gave the first).
    resources = sys.modules.get("lifecycle_probe.resources")
    if resources is not None and "tmp_warn_share" in _process_wide:
        resources.follow_tmp_warn_share(_process_wide["tmp_warn_share"][0])


def _track_client(module: ModuleType) -> None:
    """Post-import hook of a tracked client: patch it, unless tracking was switched off
    since the hook was registered (``@probe(connections=False)`` after importing probe)."""
    if "connections" not in _process_wide:
        # Watched, then forgotten by a simulated new process (reset_installation): the
        # variables and defaults decide, as they did for whoever registered the watch.
        config = Config.resolve()
        for option in PROCESS_WIDE:
            _hold(option, getattr(config, option), {})
    if not _tracking_wanted():
        return
    name = module.__name__
    try:
        __import__("lifecycle_probe.connections.tracking")
        _configure_loaded_tracking()
        # __import__, not importlib.import_module: importlib's package pulls in warnings.
        driver = f"lifecycle_probe.connections._{name}"
        __import__(driver)
        sys.modules[driver].patch(module)
    except Exception as exc:
        report_failure(f"{name} connection tracking", exc)


# Powertools' EMF provider, whose ColdStart the probe's must not double (coldstart.py).
POWERTOOLS_EMF_MODULE = "aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch"


def watch_powertools_cold_start() -> None:
    """Once Powertools' EMF provider is imported (now, if it is already), make its
    ``ColdStart`` and the probe's count once where they are the same metric (idempotent:
    the watch is kept once). For the ``emf`` exporter; never raises."""
    with guard("Powertools ColdStart hook"):
        when_imported(POWERTOOLS_EMF_MODULE, _patch_powertools)


def _patch_powertools(module: ModuleType) -> None:
    # The patch and the registry it asks are loaded here, with Powertools, not at INIT.
    from lifecycle_probe.coldstart import patch_powertools

    patch_powertools(module)


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
        # Importing ``probe`` may have come first and put its hooks in place: take them
        # down, unless an enabled ``@probe`` applied before this call relies on them (it
        # keeps them; the later ``@probe`` are disabled).
        probe_disabled()
        return False
    global _requested, _exporting
    _requested = True
    if "none" not in config.exporter:
        _exporting = True
    install_runtime_signals()
    install_connection_tracking(config, options)
    with guard("handler import hook"):
        handler = variable("LIFECYCLE_PROBE_HANDLER") or variable("_HANDLER")
        module_name = handler_module_name(handler)
        if module_name is not None and module_name != "lifecycle_probe.handler":
            # A fallback signal of INIT end for runtimes whose client we cannot wrap.
            when_imported(module_name, _mark_handler_imported)
    return True


def install_at_probe_import() -> None:
    """What importing ``probe`` puts in place, unless ``install()`` has already decided.

    Importing the decorator is the earliest moment the decorator case offers: from there
    on the probe watches for the runtime's first request for work (INIT end), times the
    imports that follow and tracks the connections they make. The options of ``@probe``
    itself are not known yet: its arguments still rule once it is applied
    (``connections=False`` leaves a client imported after it unpatched, and a lone
    ``disabled=True`` takes all of this down again: :func:`probe_disabled`).
    """
    try:
        if _installed_with is not None:
            return  # install() ran: its options (``disabled`` among them) are in force
        config = Config.resolve()
        if config.disabled:
            return
        install_runtime_signals()
        install_connection_tracking(config)
    except Exception as exc:
        report_failure("probe import", exc)


def reset_installation() -> None:
    """Forget that install() ran (tests simulating a new process)."""
    global _installed_with, _signals_installed, _clients_watched, _requested, _exporting
    _installed_with = None
    _requested = False
    _exporting = False
    _signals_installed = False
    _installed_options.clear()
    # A patched client stays patched; its tracking goes back to the defaults.
    _process_wide.clear()
    _clients_watched = False
    tracking = sys.modules.get("lifecycle_probe.connections.tracking")
    if tracking is not None:
        defaults = Config.resolve(environ={})
        tracking.configure(defaults.stale_idle_s, reporting=defaults.connections, exporting=False)
    from lifecycle_probe import coldstart

    coldstart.forget()
