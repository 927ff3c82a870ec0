"""End to end: the probe's ``otlp`` export received by a real collector, rotel-agent, also
with the function's own OpenTelemetry SDK (1.27, the oldest supported, and the newest)
bundled in its code directory, first on ``sys.path`` as on Lambda."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rotel import running_rotel, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def collector(tmp_path):
    """rotel-agent receiving OTLP/HTTP on 127.0.0.1, printing what it receives."""
    arguments = ("--exporter", "blackhole", "--debug-log", "traces", "--debug-log", "metrics",
                 "--debug-log-verbosity", "detailed")  # fmt: skip
    with running_rotel(tmp_path, *arguments) as endpoint:
        yield endpoint, tmp_path / "rotel.out"


def test_collector_receives_spans_and_metrics(local_lambda, probe_handlers, collector):
    # GIVEN a function exporting OTLP/HTTP to a real collector, flushing after the response
    endpoint, received = collector
    emulator = local_lambda(
        "traced.handler",
        probe_handlers,
        env={
            "LIFECYCLE_PROBE_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "orders-e2e",
        },
    )
    # WHEN it is invoked twice
    first, second = emulator.invoke({}), emulator.invoke({})
    emulator.close()
    assert (first.outcome, second.outcome) == ("ok", "ok")

    # THEN the collector has both invocation spans, the INIT span and the metrics
    def complete() -> bool:
        text = received.read_text()
        return text.count("Name           : lifecycle-demo") >= 2 and "faas.invocations" in text

    wait_for(complete, 20, "the collector to print the probe's telemetry")
    text = received.read_text()
    assert text.count("Name           : lambda.init") == 1
    assert "-> service.name: Str(orders-e2e)" in text
    assert f"-> faas.invocation_id: Str({first.request_id})" in text
    assert f"-> faas.invocation_id: Str({second.request_id})" in text
    assert "-> lifecycle.start: Str(cold)" in text
    assert "-> lifecycle.start: Str(warm)" in text
    assert "-> code.namespace: Str(slow_dependency)" in text
    assert "faas.coldstarts" in text
    assert os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") != endpoint  # nothing leaked here


# A function bundling its own OpenTelemetry SDK (pip install --target), whose handler says
# which SDK it runs on and where the probe's sampler came from.
BUNDLED_HANDLER = """
import sys

import opentelemetry.sdk.version

from lifecycle_probe import probe


@probe
def handler(event, context):
    sampling = sys.modules.get("opentelemetry.sdk.trace.sampling")
    return {
        "sdk": opentelemetry.sdk.version.__version__,
        "sdk_file": opentelemetry.sdk.version.__file__,
        "sampler_file": getattr(sampling, "__file__", None),
    }
"""
PIP_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def pip_cache(tmp_path_factory) -> Path:
    """pip's download cache, shared by the SDK versions of this module (CI runs it fresh)."""
    cache: Path = tmp_path_factory.mktemp("pip-cache")
    return cache


def registry_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


def bundle(task_root: Path, requirement: str, cache: Path) -> None:
    """Install ``requirement`` into ``task_root`` the way a function bundles it."""
    try:
        completed = subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--no-input", "--only-binary=:all:", "--timeout", "30", "--retries", "2",
                "--cache-dir", str(cache), "--target", str(task_root), requirement,
            ],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        completed = None
    if completed is not None and completed.returncode == 0:
        return
    if not registry_reachable():
        pytest.skip(f"PyPI is unreachable: cannot bundle {requirement} into a function")
    detail = "timed out" if completed is None else completed.stderr[-2000:]
    pytest.fail(f"pip install --target {requirement} failed: {detail}")


@pytest.mark.parametrize("sdk", ["1.27.0", "newest"])
def test_the_export_reaches_the_collector_with_the_functions_own_sdk(
    local_lambda, probe_handlers, collector, pip_cache, tmp_path, sdk
):
    # GIVEN a function that bundles opentelemetry-sdk (1.27.0, or the newest) in its code
    # directory, first on sys.path, and names a sampler (which the probe takes from the SDK)
    task_root = tmp_path / "task"
    task_root.mkdir()
    bundle(task_root, "opentelemetry-sdk" + ("" if sdk == "newest" else f"=={sdk}"), pip_cache)
    (task_root / "bundled.py").write_text(BUNDLED_HANDLER)
    shutil.copy(probe_handlers / "slow_dependency.py", task_root)
    endpoint, received = collector
    logs = tmp_path / "logs"
    emulator = local_lambda(
        "bundled.handler",
        task_root,
        env={
            "LIFECYCLE_PROBE_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": f"bundled-{sdk}",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        },
        log_dir=logs,
    )
    # WHEN it is invoked twice (the first export, after the first response, sets up the
    # sampler)
    first, second = emulator.invoke({}), emulator.invoke({})
    emulator.close()
    assert (first.outcome, second.outcome) == ("ok", "ok")
    answer = second.response if isinstance(second.response, dict) else json.loads(second.response)
    # THEN the function ran on its own SDK, and so did the probe's sampler
    assert answer["sdk_file"].startswith(str(task_root))
    assert answer["sampler_file"] is not None
    assert answer["sampler_file"].startswith(str(task_root))
    if sdk == "newest":
        assert tuple(int(p) for p in answer["sdk"].split(".")[:2]) > (1, 27)
    else:
        assert answer["sdk"] == sdk

    # AND the collector received both invocation spans, the INIT span and the metrics
    def complete() -> bool:
        text = received.read_text()
        return text.count("Name           : lifecycle-demo") >= 2 and "faas.invocations" in text

    wait_for(complete, 20, "the collector to print the probe's telemetry")
    text = received.read_text()
    assert text.count("Name           : lambda.init") == 1
    assert f"-> service.name: Str(bundled-{sdk})" in text
    assert f"-> faas.invocation_id: Str({first.request_id})" in text
    assert f"-> faas.invocation_id: Str({second.request_id})" in text
    assert "faas.coldstarts" in text
    # AND the probe had nothing to say about the SDK
    said = "".join(path.read_text(errors="replace") for path in logs.rglob("*") if path.is_file())
    assert "opentelemetry-sdk" not in said
    assert "lifecycle_probe: " not in said.replace("lifecycle_probe: INIT report", "")
