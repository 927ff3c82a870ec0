"""Runs ``inventory.handler`` in the local Lambda: two requests, a 1.5 s freeze, one more.

    python examples/connections/run.py OTLP_FILE

The inventory service runs here on 127.0.0.1 behind a stand-in load balancer that cuts
connections idle for 1 s (``lifecycle_probe.emulator.keepalive``); the function exports
OTLP JSON lines to OTLP_FILE.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lifecycle_probe.emulator import FunctionConfig, LocalLambda
from lifecycle_probe.emulator.keepalive import Server


def main(otlp_file: str) -> int:
    inventory = Server(1.0, body=b'{"in_stock": true}')
    env = {
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
        "LIFECYCLE_PROBE_OTLP_FILE": otlp_file,
        "INVENTORY_URL": f"http://127.0.0.1:{inventory.port}/stock",
    }
    config = FunctionConfig("inventory.handler", Path(__file__).resolve().parent, env=env)
    try:
        with LocalLambda(config) as emulator:
            results = [emulator.invoke({}), emulator.invoke({})]
            emulator.freeze_for(1.5)  # longer than the load balancer's 1 s idle cut-off
            results.append(emulator.invoke({}))
    finally:
        inventory.stop()
    starts = ", ".join(result.start_type_truth for result in results)
    print(f"{len(results)} requests ({starts}), all {results[-1].outcome}")
    return 0 if all(result.outcome == "ok" for result in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
