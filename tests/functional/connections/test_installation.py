"""Installing the tracking patches nothing, and imports no wrapt, until a client is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lifecycle_probe.connections import install_connection_tracking
from tests.functional.connections.conftest import unavailable

LAZY = textwrap.dedent(
    """
    import sys
    from lifecycle_probe.connections import install_connection_tracking
    install_connection_tracking(60.0)
    install_connection_tracking(60.0)
    assert "wrapt" not in sys.modules, "wrapt imported before any client"
    assert "{module}" not in sys.modules
    import {module}
    assert "wrapt" in sys.modules, "the client was not patched on import"
    print("ok")
    """
)


@pytest.mark.parametrize("module", ["psycopg2", "pymysql", "redis"])
def test_nothing_is_patched_until_the_client_is_imported(module):
    try:
        __import__(module)
    except ImportError:
        unavailable(f"driver {module} is not installed")
    done = subprocess.run(
        [sys.executable, "-c", LAZY.format(module=module)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_installing_twice_patches_once():
    redis = pytest.importorskip("redis")
    install_connection_tracking(60.0)
    install_connection_tracking(1.0)
    install_connection_tracking(60.0)
    wrapped = redis.connection.AbstractConnection.read_response.__wrapped__
    assert not hasattr(wrapped, "__wrapped__")
