"""The servers some tests reach (DESIGN.md §5) and the optional libraries they use.

PostgreSQL, MariaDB and Redis run on 127.0.0.1 before every session and in CI. A test that
needs one is marked ``services`` (``pytest -m "not services"`` leaves them out): by hand,
or by :func:`mark_service_tests` when it asks for one of :data:`SERVICE_FIXTURES`. A
missing server or library skips the test with the reason; under
``LIFECYCLE_PROBE_REQUIRE_SERVICES=1`` (``.ci/run``, where everything must be there) it
fails it instead, so that a broken service cannot turn CI green by skipping. Hence
:func:`require_module`, never ``pytest.importorskip``, which skips even then.

A plain module, imported by the conftests and tests that need it: a conftest imported by
another conftest or by a test module would be a second copy of its fixtures.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, NoReturn

import pytest

REQUIRE_SERVICES = "LIFECYCLE_PROBE_REQUIRE_SERVICES"

# Trust authentication ignores it: it is there to prove it never leaks.
PASSWORD = "hunter2"
POSTGRES_DSN = f"host=127.0.0.1 port=5432 dbname=test user=postgres password={PASSWORD}"
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "database": "test"}
REDIS = {"host": "127.0.0.1", "port": 6379}

# Fixtures that reach a server: a test asking for one is a ``services`` test.
SERVICE_FIXTURES = frozenset(
    {
        # tests/integration/probe/conftest.py
        "postgres_env",
        "psycopg_env",
        "mariadb_env",
        "redis_admin",
        "redis_env",
        # tests/functional/connections/conftest.py
        "postgres",
        "postgres3",
        "any_postgres",
        "mariadb",
        "redis_server",
    }
)


def unavailable(reason: str) -> NoReturn:
    """Skip for want of a service or library, or fail when the run requires them all."""
    if os.environ.get(REQUIRE_SERVICES) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SERVICES}=1)")
    pytest.skip(reason)


def require_module(name: str) -> Any:
    """The module ``name``, imported; skips (or fails, see :func:`unavailable`) without it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"{name} cannot be imported: {exc}")


def mark_service_tests(items: list[pytest.Item]) -> None:
    """Mark ``services`` every collected test that asks for a fixture of a server."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)
