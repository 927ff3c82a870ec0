#!/usr/bin/env python3
"""Peak resident memory of a function process after 100 invocations, with and without the
OpenTelemetry export.

What it measures, in one run
    A trivial handler in the local Lambda (real ``awslambdaric`` runtime processes), four
    ways:
      bare     the handler without the probe;
      none     ``@probe`` with ``LIFECYCLE_PROBE_EXPORTER=none`` (capture, no export);
      otlp     ``@probe`` with ``LIFECYCLE_PROBE_EXPORTER=otlp`` to a real collector
               (rotel-agent, from the dev extras; a local OTLP/HTTP stand-in answering 200
               when rotel is not installed), flushing as deployed (after the response);
      peer     ``opentelemetry-instrumentation-aws-lambda`` with the OpenTelemetry SDK
               (TracerProvider + BatchSpanProcessor, MeterProvider), exporting to the same
               collector with the OTLP/HTTP JSON exporter when it is installed, else to
               in-memory exporters (then a floor for the peer: no exporter package).
    Each process serves ``--invocations`` invocations (100), then one more that returns
    the process's peak RSS (``ru_maxrss``): the peak after 100 exports. Each case runs in
    ``--processes`` fresh environments (3), interleaved; the median is reported.

Targets (issue 15): the peak RSS the OpenTelemetry export adds (otlp - none) at most
5 MB; and the probe with its export (otlp - bare) below the peer (peer - bare). Verdicts
are printed as PASS or MISS; the script always exits 0.

    .venv/bin/python benchmarks/memory_peak.py [--invocations 100] [--processes 3]
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

TARGET_OTEL_ADDED_MB = 5.0
FUNCTION_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 15.0

PEAK = """
import resource


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
"""
BARE_SOURCE = (
    PEAK
    + """

def handler(event, context):
    if event.get("peak"):
        return {"peak_rss": peak_rss_bytes()}
    return {"statusCode": 200, "body": "ok"}
"""
)
PROBED_SOURCE = (
    PEAK
    + """
from lifecycle_probe import probe


@probe
def handler(event, context):
    if event.get("peak"):
        return {"peak_rss": peak_rss_bytes()}
    return {"statusCode": 200, "body": "ok"}
"""
)
PEER_SOURCE = (
    PEAK
    + """
import os

from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

try:
    from opentelemetry.exporter.otlp.json.http import OTLPMetricExporter, OTLPSpanExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    span_processor = BatchSpanProcessor(OTLPSpanExporter())
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    EXPORTER = "otlp-json-http"
except ImportError:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    span_processor = SimpleSpanProcessor(InMemorySpanExporter())
    reader = InMemoryMetricReader()
    EXPORTER = "in-memory"


def handler(event, context):
    if event.get("peak"):
        return {"peak_rss": peak_rss_bytes(), "exporter": EXPORTER}
    return {"statusCode": 200, "body": "ok"}


tracer_provider = TracerProvider()
tracer_provider.add_span_processor(span_processor)
meter_provider = MeterProvider(metric_readers=[reader])
# Wraps this module's handler (named by _HANDLER), flushing both providers every call.
AwsLambdaInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
"""
)
MODULES = {"bare_fn": BARE_SOURCE, "probed_fn": PROBED_SOURCE, "peer_fn": PEER_SOURCE}

EVENT: dict[str, Any] = {
    "resource": "/orders/{id}",
    "path": "/orders/42",
    "httpMethod": "GET",
    "headers": {"Host": "api.example.com"},
    "requestContext": {"resourcePath": "/orders/{id}", "httpMethod": "GET", "stage": "prod"},
    "body": None,
}


# -- collectors --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


class _Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        return


class Collector:
    """rotel-agent on 127.0.0.1 when installed, else a stand-in answering every POST 200."""

    def __init__(self, work: Path) -> None:
        self.kind = "rotel-agent"
        self._process: subprocess.Popen[bytes] | None = None
        self._server: http.server.ThreadingHTTPServer | None = None
        try:
            import rotel

            agent = Path(rotel.__file__).resolve().parent / "rotel-agent"
        except ImportError:
            agent = None
        if agent is not None and agent.exists():
            port, grpc = free_port(), free_port()
            self._process = subprocess.Popen(
                [
                    str(agent), "start",
                    "--otlp-http-endpoint", f"127.0.0.1:{port}",
                    "--otlp-grpc-endpoint", f"127.0.0.1:{grpc}",
                    "--exporter", "blackhole",
                    "--pid-file", str(work / "rotel.pid"),
                    "--log-file", str(work / "rotel.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with socket.socket() as check:
                    if check.connect_ex(("127.0.0.1", port)) == 0:
                        return
                time.sleep(0.05)
            raise RuntimeError("rotel-agent did not listen within 20 s")
        self.kind = "local OTLP/HTTP stand-in (rotel not installed)"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- measuring -----------------------------------------------------------------------------


def peak_after(
    code_dir: Path, log_dir: Path, module: str, env: dict[str, str], invocations: int, tag: str
) -> tuple[int, dict[str, Any]]:
    """Peak RSS (bytes) of one fresh runtime process after ``invocations`` invocations."""
    from lifecycle_probe.emulator import FunctionConfig, LocalLambda

    function = FunctionConfig(
        f"{module}.handler",
        code_dir,
        env=env,
        timeout_s=FUNCTION_TIMEOUT_S,
        function_name="memory-peak-benchmark",
    )
    with LocalLambda(function, log_dir=log_dir / tag) as local_lambda:
        for _ in range(invocations):
            result = local_lambda.invoke(EVENT, wait_for_freeze=False)
            if not result.ok:
                raise RuntimeError(f"{tag}: invocation failed: {result.error}")
            # the after-response export runs before the environment is frozen again
            local_lambda.wait_idle(timeout_s=SETTLE_TIMEOUT_S)
        result = local_lambda.invoke({"peak": True}, wait_for_freeze=False)
        answer = result.response
        if isinstance(answer, (bytes, str)):
            import json

            answer = json.loads(answer)
        if not isinstance(answer, dict) or "peak_rss" not in answer:
            raise RuntimeError(f"{tag}: no peak in the answer: {answer!r} ({result.error})")
        return int(answer["peak_rss"]), answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--invocations", type=int, default=100)
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per case")
    args = parser.parse_args(argv)
    for name in list(os.environ):
        if name.startswith(("LIFECYCLE_PROBE_", "OTEL_")):
            del os.environ[name]
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    print(f"interpreter: {sys.executable} (Python {sys.version.split()[0]})")
    work = Path(tempfile.mkdtemp(prefix="memory-peak-benchmark-"))
    collector = None
    try:
        code_dir = work / "code"
        code_dir.mkdir()
        for module, source in MODULES.items():
            (code_dir / f"{module}.py").write_text(source)
        collector = Collector(work)
        print(f"collector: {collector.kind} at {collector.url}")
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
        cases: list[tuple[str, str, dict[str, str]]] = [
            ("bare handler", "bare_fn", {}),
            ("probe, exporter=none", "probed_fn", {"LIFECYCLE_PROBE_EXPORTER": "none"}),
            ("probe, exporter=otlp", "probed_fn", {"LIFECYCLE_PROBE_EXPORTER": "otlp", **otlp}),
            ("peer: contrib aws-lambda + SDK", "peer_fn", dict(otlp)),
        ]
        # One unmeasured process per case writes the .pyc files (Lambda imports from them).
        for index, (_label, module, env) in enumerate(cases):
            peak_after(code_dir, work / "logs", module, env, 2, f"warmup-{index}")
        peaks: dict[str, list[int]] = {label: [] for label, _, _ in cases}
        notes: dict[str, str] = {}
        for round_ in range(max(1, args.processes)):
            shift = round_ % len(cases)
            for label, module, env in cases[shift:] + cases[:shift]:
                tag = f"{module}-{round_}-{len(peaks[label])}"
                peak, answer = peak_after(
                    code_dir, work / "logs", module, env, args.invocations, tag
                )
                peaks[label].append(peak)
                if "exporter" in answer:
                    notes[label] = f"exporting with {answer['exporter']}"
        report(peaks, notes, args.invocations)
    except Exception:
        print("the run failed:")
        traceback.print_exc(file=sys.stdout)
    finally:
        if collector is not None:
            collector.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(peaks: dict[str, list[int]], notes: dict[str, str], invocations: int) -> None:
    mb = 1024 * 1024
    medians = {label: statistics.median(values) for label, values in peaks.items()}
    bare = medians["bare handler"]
    print()
    print(f"peak RSS of a function process after {invocations} invocations (median of processes)")
    header = f"{'case':<34} {'peak MB':>8} {'+ vs bare':>10}  samples (MB)"
    print(header)
    print("-" * len(header))
    for label, values in peaks.items():
        added = "" if label == "bare handler" else f"{(medians[label] - bare) / mb:+.1f}"
        samples = ", ".join(f"{v / mb:.1f}" for v in values)
        note = f"  ({notes[label]})" if label in notes else ""
        print(f"{label:<34} {medians[label] / mb:8.1f} {added:>10}  {samples}{note}")
    otel_added = (medians["probe, exporter=otlp"] - medians["probe, exporter=none"]) / mb
    probe_added = (medians["probe, exporter=otlp"] - bare) / mb
    peer_added = (medians["peer: contrib aws-lambda + SDK"] - bare) / mb
    verdict = "PASS" if otel_added <= TARGET_OTEL_ADDED_MB else "MISS"
    print(
        f"the OpenTelemetry export adds {otel_added:+.1f} MB (otlp - none) against "
        f"<= {TARGET_OTEL_ADDED_MB:.0f} MB: {verdict}"
    )
    print(
        f"the probe with its export adds {probe_added:+.1f} MB (otlp - bare), the peer "
        f"{peer_added:+.1f} MB (peer - bare): {'PASS' if probe_added < peer_added else 'MISS'}"
    )


if __name__ == "__main__":
    sys.exit(main())
