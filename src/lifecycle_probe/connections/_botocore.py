"""botocore's retries: a dropped keep-alive connection that botocore's retry replaced.

botocore has no connections of its own: urllib3 carries them (``_urllib3`` tracks them).
But it calls ``urlopen`` with ``retries=False`` and retries above it:
``Endpoint._send_request`` sends each attempt and asks its retry handler whether to send
another (``max_attempts``, the retry ``mode``). A reused connection whose request failed
with a connection-level error (the server read the request and closed without a reply, a
drop urllib3's check cannot see) is therefore settled when ``_send_request`` is over, not
its ``urlopen``: ``detected`` when a later attempt worked on a new connection (the caller
saw nothing), ``failed`` when the error reaches the caller (retries exhausted, or off).
The bookkeeping is urllib3's (:func:`_urllib3.retrying_call`); this module only makes
botocore's retry loop the outermost retrying call.

Importing botocore patches nothing: ``botocore.endpoint`` (imported with the first
session or client) is patched when it is imported.
"""

from __future__ import annotations

from lifecycle_probe._safe import report_failure, warn_once
from lifecycle_probe.imports import when_imported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["patch"]

# The method of botocore.endpoint.Endpoint that loops over a request's attempts.
RETRY_LOOP = "_send_request"


def patch(module: ModuleType) -> None:
    """Make botocore's retry loop settle stale urllib3 reuses, once its endpoint is imported."""
    when_imported(f"{module.__name__}.endpoint", _patch_endpoint)


def _patch_endpoint(endpoint: ModuleType) -> None:
    try:
        endpoint_cls = getattr(endpoint, "Endpoint", None)
        if endpoint_cls is None or not callable(getattr(endpoint_cls, RETRY_LOOP, None)):
            # Another botocore: urllib3's reuses are still tracked, settled by urlopen.
            warn_once(
                "botocore:retry-loop",
                "lifecycle_probe: botocore.endpoint.Endpoint has no %s; a stale connection "
                "that botocore's retries replace is reported failed, not detected",
                RETRY_LOOP,
            )
            return
        if endpoint_cls.__dict__.get("_lifecycle_probe_tracked", False):
            return
        # Only now that botocore is put to use (urllib3's own hook has usually loaded both).
        import wrapt  # type: ignore[import-untyped]  # wrapt 1.17 ships no type information

        from lifecycle_probe.connections._urllib3 import retrying_call

        wrapt.wrap_function_wrapper(endpoint_cls, RETRY_LOOP, retrying_call)
        endpoint_cls._lifecycle_probe_tracked = True
    except Exception as exc:
        report_failure("botocore connection tracking", exc)
