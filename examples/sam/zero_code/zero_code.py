"""A handler that knows nothing of the probe: the layer's exec wrapper instruments it
(``AWS_LAMBDA_EXEC_WRAPPER=/opt/lifecycle-probe``). Its top-level imports are INIT work
that shows up as ``lambda.import`` spans under ``lambda.init``.

Locally, from the repository root, through the entry point the wrapper sets up (the local
Lambda passes the handler on the command line, where the wrapper cannot change it)::

    lifecycle-probe emulate lifecycle_probe.handler.handler --code-dir examples/sam/zero_code \\
        --env LIFECYCLE_PROBE_HANDLER=zero_code.handler --env LIFECYCLE_PROBE_EXPORTER=console
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal
from typing import Any

import boto3  # the Lambda runtime has it: a typical, costly INIT import

# Module state made at INIT and kept across warm invocations.
INVOCATIONS = 0


def handler(event: Any, context: Any) -> dict[str, Any]:
    global INVOCATIONS
    INVOCATIONS += 1
    probe = sys.modules.get("lifecycle_probe")
    return {
        "invocations": INVOCATIONS,
        "echo": event,
        "total": str(sum(Decimal(str(n)) for n in event.get("amounts", []))),
        "function": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        "boto3": boto3.__version__,
        # Where the probe was loaded from (on Lambda: /opt/python/lifecycle_probe).
        "probe_file": getattr(probe, "__file__", None),
    }
