"""A connection kept across invocations, the pattern that meets stale connections after
a freeze: a MySQL connection (PyMySQL) made at INIT, checked at its first use in each
invocation by ``reusable`` and replaced when the freeze killed it. The probe reports
each stale reuse (``lifecycle.connection.stale``, EMF ``StaleConnection*``).

The database settings come from the template's parameters (``DB_*`` variables); with
``DB_SECRET_ARN`` set, the password is read from that Secrets Manager secret at INIT.
Locally, against a MySQL or MariaDB on 127.0.0.1 (root, no password, database ``test``)::

    pip install -r examples/sam/connection/requirements.txt
    lifecycle-probe emulate connection.handler --code-dir examples/sam/connection \\
        --env DB_HOST=127.0.0.1 --env DB_USER=root --env DB_NAME=test \\
        --env LIFECYCLE_PROBE_EXPORTER=console
"""

from __future__ import annotations

import json
import os
from typing import Any

import pymysql  # type: ignore[import-untyped, unused-ignore]

from lifecycle_probe import current, probe
from lifecycle_probe.connections import reusable


def _password() -> str:
    secret_arn = os.environ.get("DB_SECRET_ARN")
    if not secret_arn:
        return os.environ.get("DB_PASSWORD", "")
    import boto3  # the Lambda runtime has it

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=secret_arn)
    value = secret["SecretString"]
    try:
        return str(json.loads(value)["password"])  # an RDS-managed secret
    except (ValueError, KeyError, TypeError):
        return str(value)


def _connect() -> Any:
    return pymysql.connect(
        host=os.environ.get("DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("DB_PORT", "3306")),
        user=os.environ.get("DB_USER", "root"),
        password=_password(),
        database=os.environ.get("DB_NAME", "test"),
        connect_timeout=5,
    )


# Made at INIT, reused by every invocation of this environment.
get_connection = reusable(_connect)
get_connection()


@probe
def handler(event: Any, context: Any) -> dict[str, Any]:
    with get_connection().cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone() or (None,)
    facts = current()
    return {"select": one, "start": facts.start, "invocation_seq": facts.invocation_seq}
