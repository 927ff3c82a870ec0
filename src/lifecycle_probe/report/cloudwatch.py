"""Reading a function's log group from CloudWatch Logs (boto3, imported here only).

boto3 is the ``cloudwatch`` extra (``pip install 'lifecycle-probe[cloudwatch]'``), not a
dependency of the probe: a function never needs it from the probe (the Lambda runtime has
its own), and a layer must not ship it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

__all__ = ["MissingBoto3", "log_lines", "since_seconds"]

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MissingBoto3(ImportError):
    """The ``cloudwatch`` extra is not installed."""


def since_seconds(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``2d``, ``1w`` as seconds (ValueError otherwise)."""
    match = _SINCE.match(text)
    if match is None:
        raise ValueError(f"--since {text!r}: use a number and s, m, h, d or w (e.g. 1h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def log_lines(
    log_group: str,
    since_s: float,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    now_s: float | None = None,
    page_size: int | None = None,
) -> Iterator[str]:
    """The messages of ``log_group``'s events of the last ``since_s`` seconds, oldest first
    per stream, page after page (``filter_log_events``; botocore retries throttling, and
    credentials and region are found as the AWS CLI finds them)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise MissingBoto3(
            "--cloudwatch needs boto3, which is not installed here: "
            "pip install 'lifecycle-probe[cloudwatch]'"
        ) from exc

    client = boto3.client(
        "logs",
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": 10}),
    )
    start_ms = int(((time.time() if now_s is None else now_s) - since_s) * 1000)
    paginator = client.get_paginator("filter_log_events")
    # No filter pattern: the reader picks the probe's lines out of the rest, and a pattern
    # would have to match EMF documents, JSON log lines and console lines alike.
    pagination = {} if page_size is None else {"PageSize": page_size}
    pages = paginator.paginate(
        logGroupName=log_group, startTime=start_ms, PaginationConfig=pagination
    )
    for page in pages:
        for event in page.get("events", ()):
            message = event.get("message")
            if message:
                yield message
