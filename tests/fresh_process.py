"""A case run in a fresh interpreter, where nothing of the probe is imported yet.

For what only a new process shows: which modules INIT loads, and which imports the import
tracer records as the function's. :data:`CAPTURING_SINK` is code a case starts with: a
process-wide sink that keeps the records (``seen``) and failed INITs (``failures``) it is
given, in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

CAPTURING_SINK = """
from lifecycle_probe.sinks import add_process_sink

seen = []
failures = []


class Capture:
    name = "capture"
    reads_event = False

    def export(self, record):
        seen.append(record)

    def export_init_failure(self, failure, timeout_s):
        failures.append(failure)

    def flush(self, timeout_s):
        pass


add_process_sink(Capture())
"""


def run_fresh(code: str, *arguments: str, **variables: str) -> Any:
    """Run ``code`` (dedented) in a fresh interpreter, without the ``LIFECYCLE_PROBE_*`` and
    ``AWS_*`` variables of this one and with ``variables``; the JSON of its last line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_PROBE_", "AWS_"))}
    if "PYTHONPATH" in variables and env.get("PYTHONPATH"):
        # (in front of the inherited path, which may name the tree under test)
        variables["PYTHONPATH"] += os.pathsep + env["PYTHONPATH"]
    env.update(variables)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])
