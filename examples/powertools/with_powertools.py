"""``@probe`` with Powertools' Logger and Metrics: the probe's EMF and JSON log lines.

With ``LIFECYCLE_PROBE_EXPORTER=emf`` the probe writes one EMF document per invocation
(its metrics, under the function's ``function_name`` dimension) and, since the function
logs JSON through Powertools' Logger, its INIT report as a JSON line with the same keys as
Powertools' own lines. ``lifecycle-probe report`` reads them from the log (a saved log
stream or a CloudWatch Logs export; ``--cloudwatch`` reads the log group itself).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from lifecycle_probe import probe

logger = Logger()
metrics = Metrics(namespace="Orders")


@probe
@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: Any, context: Any) -> dict[str, Any]:
    metrics.add_metric(name="OrdersPlaced", unit=MetricUnit.Count, value=1)
    logger.info("order placed")
    return {"ok": True}
