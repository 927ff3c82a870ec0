"""A real OpenTelemetry collector for the tests: rotel-agent from the ``rotel`` wheel."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@contextmanager
def running_rotel(work_dir: Path, *exporter_arguments: str) -> Iterator[str]:
    """rotel-agent receiving OTLP/HTTP on 127.0.0.1 and exporting as ``exporter_arguments``
    say; yields its OTLP/HTTP endpoint once it listens. Its own output goes to
    ``work_dir / "rotel.out"``."""
    import rotel

    agent = Path(rotel.__file__).resolve().parent / "rotel-agent"
    http_port, grpc_port = free_port(), free_port()
    with (work_dir / "rotel.out").open("w") as out:
        process = subprocess.Popen(
            [
                str(agent), "start",
                "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
                "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
                *exporter_arguments,
                "--pid-file", str(work_dir / "rotel.pid"),
                "--log-file", str(work_dir / "rotel.log"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def listening() -> bool:
            with socket.socket() as check:
                return check.connect_ex(("127.0.0.1", http_port)) == 0

        wait_for(listening, 20, "rotel-agent to listen")
        yield f"http://127.0.0.1:{http_port}"
    finally:
        process.kill()
        process.wait(timeout=10)
