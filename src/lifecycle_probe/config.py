"""One frozen configuration: explicit argument > ``LIFECYCLE_PROBE_*`` variable > default.

A bad value never raises: it gives one warning naming the variable (or argument) and the
value, and the default is used.
"""

from __future__ import annotations

import os
import sys

from lifecycle_probe._safe import warn_once
from lifecycle_probe.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = ["EXPORTERS", "Config", "variable", "variable_reader"]

EXPORTERS = ("otlp", "otlp-file", "emf", "console", "none")
FLUSH_MODES = ("sync", "after-response")
GLOBALS_MODES = ("off", "warn")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

# The OTLP endpoint variables whose presence makes ``otlp`` the default exporter.
_OTLP_ENDPOINT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


# Defaults, in field order. ``exporter``'s default depends on the environment (below).
_DEFAULTS: dict[str, Any] = {
    "disabled": False,
    "exporter": ("emf",),
    "otlp_file": None,
    # After the response where Lambda allows an extension; sync (bounded) elsewhere.
    "flush": "after-response",
    "flush_timeout_ms": 2000,
    # An on-demand environment whose caller is waiting is handed its event within
    # milliseconds of INIT ending; one second is two orders of magnitude above that and
    # still well below the seconds-to-minutes that proactively initialised environments
    # wait. See README "Start types".
    "proactive_init_gap_ms": 1000,
    "import_min_ms": 1.0,
    "connections": True,
    "stale_idle_s": 60.0,
    "globals": "warn",
    # CloudWatch EMF (the ``emf`` exporter). Namespace and service come from the options,
    # else Powertools' own variables (below), else these defaults: no service means no
    # ``service`` dimension, as with Powertools.
    "namespace": "LifecycleProbe",
    "service": None,
    "emf_high_resolution": False,
    # The share of the ephemeral storage (AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE) whose use
    # in /tmp gives a warning, once per environment. See README "/tmp and memory across reuse".
    "tmp_warn_share": 0.8,
    # Lambda's own figures (billed duration, peak memory, INIT and restore durations),
    # through a Telemetry API subscription of the internal extension. See README
    # "Lambda's own figures".
    "telemetry_api": True,
}

# Options read from another tool's variable instead of ``LIFECYCLE_PROBE_<NAME>``: the
# probe meets Powertools users where their configuration already is.
_VARIABLES = {
    "namespace": "POWERTOOLS_METRICS_NAMESPACE",
    "service": "POWERTOOLS_SERVICE_NAME",
}
# The variable each option is read from, and every variable a configuration reads.
_VARIABLE_OF = {
    name: _VARIABLES.get(name) or f"LIFECYCLE_PROBE_{name.upper()}" for name in _DEFAULTS
}
_READ = frozenset((*_VARIABLE_OF.values(), *_OTLP_ENDPOINT_VARIABLES))


# -- the process's variables ----------------------------------------------------------------
# Read from os.environ's own bytes mapping (where POSIX keeps them; os.environ writes through
# to it), one C lookup each: ``os.environ.get`` makes Python calls to encode the name and
# decode the value, and for a variable that is not set raises and catches a KeyError
# (~25 k instructions). INIT asks for a dozen variables, most of them unset outside Lambda;
# the decorator and the resource watch read two on every invocation.
_ENCODING = sys.getfilesystemencoding()
_ENVIRON = os.environ
_ENVIRON_BYTES = getattr(_ENVIRON, "_data", None) if os.name == "posix" else None
if type(_ENVIRON_BYTES) is not dict:  # another Python's os.environ: the public way
    _ENVIRON_BYTES = None


def variable(name: str) -> str | None:
    """The value of the process's environment variable ``name``; None when it is not set."""
    data = _ENVIRON_BYTES
    if data is None or os.environ is not _ENVIRON:  # (os.environ replaced: ask the new one)
        return os.environ.get(name)
    raw = data.get(name.encode(_ENCODING, "surrogateescape"))
    return None if raw is None else raw.decode(_ENCODING, "surrogateescape")


def variable_reader(name: str) -> Callable[[], str | None]:
    """A reader of the variable ``name`` for a path taken on every invocation: one lookup
    and no encoding of the name per read (half of :func:`variable`'s cost). It reads the
    mapping ``os.environ`` was when it was made."""
    data = _ENVIRON_BYTES
    if data is None:
        return lambda: variable(name)
    key = name.encode(_ENCODING, "surrogateescape")
    encoding = _ENCODING

    def read() -> str | None:
        raw = data.get(key)
        return None if raw is None else raw.decode(encoding, "surrogateescape")

    return read


def _process_variables() -> dict[str, str]:
    """Those of our variables the process's environment sets (one pass, inline)."""
    data = _ENVIRON_BYTES
    if data is None or os.environ is not _ENVIRON:
        return {v: value for v in _READ if (value := os.environ.get(v)) is not None}
    found = {}
    for name, key in _READ_KEYS:
        raw = data.get(key)  # (get: another thread may unset it meanwhile)
        if raw is not None:
            found[name] = raw.decode(_ENCODING, "surrogateescape")
    return found


# (the names are ASCII: their bytes are the same in every encoding os.environ may use)
_READ_KEYS = tuple(zip(_READ, map(str.encode, _READ), strict=True))


class Config(Record):
    """Everything the probe can be told. Build it with :meth:`Config.resolve`."""

    # In the order of _DEFAULTS (tests/unit/test_config.py holds them to it).
    disabled: bool
    exporter: tuple[str, ...]
    otlp_file: str | None
    flush: str
    flush_timeout_ms: int
    proactive_init_gap_ms: int
    import_min_ms: float
    connections: bool
    stale_idle_s: float
    globals: str
    namespace: str
    service: str | None
    emf_high_resolution: bool
    tmp_warn_share: float
    telemetry_api: bool

    def __init__(self, *args: Any, **values: Any) -> None:
        # A process builds one or two configurations, at INIT: stored field by field
        # through the slots, rather than by the constructor records compile on their
        # first use (~0.2 ms, INIT's largest single cost in ``install()``).
        values.update(zip(self._fields, args, strict=False))
        if len(args) > len(self._fields) or values.keys() != set(self._fields):
            raise TypeError(f"Config takes exactly its fields: {', '.join(self._fields)}")
        for name in self._fields:
            getattr(Config, name).__set__(self, values[name])

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **explicit: Any) -> Config:
        """Build the configuration from explicit arguments, then ``environ``, then defaults.

        An explicit argument of ``None`` counts as not given.
        """
        # The variables of ours that are set, found in one pass over the environment's
        # names: each lookup of a variable that is not set costs os.environ a KeyError
        # raised and caught, and a configuration reads 18 (the pass costs half of that
        # with Lambda's ~30 variables; INIT builds two or three configurations).
        if environ is None:
            env = _process_variables()
        else:
            try:
                # (get, not []: another thread may unset a variable between the two)
                env = {
                    v: value
                    for v in environ
                    if v in _READ and (value := environ.get(v)) is not None
                }
            except Exception:  # a mapping that cannot be iterated: ask it for each variable
                env = {v: value for v in _READ if (value := environ.get(v)) is not None}
        for name, value in explicit.items():
            if name not in _DEFAULTS:
                warn_once(
                    f"config:unknown:{name}",
                    "lifecycle_probe: unknown option %s=%s ignored (known: %s)",
                    name,
                    _echo(value),
                    ", ".join(_DEFAULTS),
                )
        values: list[Any] = []
        for name in cls._fields:
            parse = _PARSERS[name]
            default = _default_exporter(env) if name == "exporter" else _DEFAULTS[name]
            given = explicit.get(name)
            if given is not None:
                values.append(_parse_or_default(f"argument {name}", given, parse, default))
                continue
            variable = _VARIABLE_OF[name]
            raw = env.get(variable)
            if raw is None or not raw.strip():
                values.append(default)
            else:
                values.append(_parse_or_default(variable, raw, parse, default))
        return cls(*values)


def _default_exporter(env: Mapping[str, str]) -> tuple[str, ...]:
    if any(env.get(v) for v in _OTLP_ENDPOINT_VARIABLES):
        return ("otlp",)
    return ("emf",)


# How much of a bad value a warning echoes: a variable can hold anything (5000 digits, a
# pasted file), and the warning must stay one readable line.
_ECHO_CHARS = 40


def _echo(value: Any, limit: int = _ECHO_CHARS) -> str:
    """``repr(value)``, cut to its first ``limit`` characters and "…"."""
    try:
        text = repr(value)
    except Exception:  # an int past Python's digit limit has no repr (3.11+)
        return f"<{type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[:limit] + "…"


def _parse_or_default(source: str, raw: Any, parse: Callable[[Any], Any], default: Any) -> Any:
    try:
        return parse(raw)
    except Exception as exc:  # ValueError, TypeError, OverflowError (10**400 ms), ...
        shown = _echo(raw)
        # The reason is cut too: int()'s own message quotes the whole value.
        reason = str(exc)
        if len(reason) > 2 * _ECHO_CHARS:
            reason = reason[: 2 * _ECHO_CHARS] + "…"
        warn_once(
            f"config:{source}:{shown}",
            "lifecycle_probe: %s=%s is not valid (%s); using the default %s",
            source,
            shown,
            reason,
            # A switch's default in the words the README gives it (on/off), not Python's.
            ("on" if default else "off") if isinstance(default, bool) else repr(default),
        )
        return default


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected 1/true/on or 0/false/off")


# Upper bounds, checked at the door: a value past them passes int()/float() but breaks
# later, deep inside (a lock's or a socket's timeout raises OverflowError for 1e300 s).
# Each is far beyond anything meaningful on Lambda, whose invocations last 15 min at most.
_FIFTEEN_MINUTES_MS = 900_000
_MAXIMA: dict[str, float] = {
    "flush_timeout_ms": _FIFTEEN_MINUTES_MS,
    "import_min_ms": _FIFTEEN_MINUTES_MS,
    # Lambda may initialise an environment ahead of demand hours before its first event.
    "proactive_init_gap_ms": 24 * 3600 * 1000,
    # No environment lives a week; a connection idle that long is no longer a risk figure.
    "stale_idle_s": 7 * 24 * 3600,
    # A share of the ephemeral storage.
    "tmp_warn_share": 1.0,
}


def _parse_non_negative_int(raw: Any, maximum: float) -> int:
    if isinstance(raw, bool):
        raise TypeError("expected a number of milliseconds, not a boolean")
    value = int(str(raw).strip()) if not isinstance(raw, int) else raw
    if not 0 <= value <= maximum:
        raise ValueError(f"must be between 0 and {maximum:.0f}")
    return value


def _parse_non_negative_float(raw: Any, maximum: float) -> float:
    if isinstance(raw, bool):
        raise TypeError("expected a number, not a boolean")
    value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
    if not 0 <= value <= maximum:  # also rejects NaN and infinities
        raise ValueError(f"must be a number between 0 and {maximum:.0f}")
    return value


def _bounded(parse: Callable[[Any, float], Any], name: str) -> Callable[[Any], Any]:
    maximum = _MAXIMA[name]
    return lambda raw: parse(raw, maximum)


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in options:
            raise ValueError("expected one of " + ", ".join(options))
        return text

    return parse


def _parse_exporters(raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else list(raw)
    names: list[str] = []
    for item in items:
        for part in str(item).split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in EXPORTERS:
                raise ValueError(f"unknown exporter {name!r}; expected " + ", ".join(EXPORTERS))
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("no exporter named")
    # ``none`` means nothing at all, whatever else was listed beside it.
    return ("none",) if "none" in names else tuple(names)


def _parse_path(raw: Any) -> str:
    text = os.fspath(raw) if not isinstance(raw, str) else raw
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected a file path")
    return text


def _parse_namespace(raw: Any) -> str:
    # CloudWatch's rules for a namespace; EMF with a bad one is dropped by CloudWatch
    # without a word, so it is refused here, where a warning can still say why.
    text = str(raw).strip()
    if not 1 <= len(text) <= 255:
        raise ValueError("a CloudWatch namespace has 1 to 255 characters")
    if text.startswith("AWS/"):
        raise ValueError("namespaces starting with 'AWS/' are reserved for AWS")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/#: ")
    if not set(text) <= allowed:
        raise ValueError("allowed: letters, digits, space and . - _ / # :")
    return text


def _parse_dimension_value(raw: Any) -> str:
    # A CloudWatch dimension value: 1 to 1024 ASCII characters, not only white space.
    text = str(raw).strip()
    if not 1 <= len(text) <= 1024 or not text.isascii() or not text.isprintable():
        raise ValueError("a CloudWatch dimension value has 1 to 1024 printable ASCII characters")
    return text


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "disabled": _parse_bool,
    "exporter": _parse_exporters,
    "otlp_file": _parse_path,
    "flush": _choice(FLUSH_MODES),
    "flush_timeout_ms": _bounded(_parse_non_negative_int, "flush_timeout_ms"),
    "proactive_init_gap_ms": _bounded(_parse_non_negative_int, "proactive_init_gap_ms"),
    "import_min_ms": _bounded(_parse_non_negative_float, "import_min_ms"),
    "connections": _parse_bool,
    "stale_idle_s": _bounded(_parse_non_negative_float, "stale_idle_s"),
    "globals": _choice(GLOBALS_MODES),
    "namespace": _parse_namespace,
    "service": _parse_dimension_value,
    "emf_high_resolution": _parse_bool,
    "tmp_warn_share": _bounded(_parse_non_negative_float, "tmp_warn_share"),
    "telemetry_api": _parse_bool,
}
