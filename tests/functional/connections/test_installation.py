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


BOTOCORE_LAZY = textwrap.dedent(
    """
    import sys
    from lifecycle_probe.connections import install_connection_tracking
    install_connection_tracking(60.0)
    import botocore
    assert "botocore.endpoint" not in sys.modules, "the probe imported botocore.endpoint"
    assert "wrapt" not in sys.modules, "wrapt imported before botocore was put to use"
    import botocore.endpoint
    import wrapt
    loop = botocore.endpoint.Endpoint.__dict__["_send_request"]
    assert isinstance(loop, wrapt.FunctionWrapper), "the retry loop was not patched"
    assert not isinstance(loop.__wrapped__, wrapt.FunctionWrapper), "patched twice"
    print("ok")
    """
)


def test_botocores_retry_loop_is_patched_only_once_its_endpoint_is_imported():
    # GIVEN tracking installed in a fresh process, before botocore
    try:
        __import__("botocore")
    except ImportError:
        unavailable("botocore is not installed")
    # WHEN botocore, then botocore.endpoint, are imported
    done = subprocess.run(
        [sys.executable, "-c", BOTOCORE_LAZY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # THEN importing botocore patched nothing, and its endpoint's retry loop once
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
