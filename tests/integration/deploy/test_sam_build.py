"""``sam build`` of sam-template.yaml, and what it built run in the local Lambda.

The session builds the template once, offline, into a temporary directory (both layers
through layer/Makefile, the example functions through examples/sam/Makefile). Then the
built x86_64 layer (which serves python3.11, this interpreter) and the built zero-code
function run under AWS's own runtime client, started as a managed Python runtime starts
it (the handler read from ``_HANDLER``, behind ``AWS_LAMBDA_EXEC_WRAPPER``), with
``AWS_LAMBDA_EXEC_WRAPPER`` set to the built wrapper: the layer's root plays /opt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import distributions, version
from pathlib import Path
from typing import Any

import pytest

from tests.integration.probe.otlp import read_otlp, total

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "sam-template.yaml"
# Lambda's managed runtime stand-in of the zero-code tests: it runs the wrapper named by
# ZERO_CODE_EXEC_WRAPPER (exported as AWS_LAMBDA_EXEC_WRAPPER) with a runtime command that
# reads the handler from _HANDLER, as /var/runtime/bootstrap does.
MANAGED_RUNTIME = ROOT / "tests" / "integration" / "zero_code" / "managed_runtime" / "bootstrap"
MAX_LAYER_ZIP_BYTES = 5_000_000
EVENTS = [{"amounts": [1, 2.5]}, {"amounts": [4]}, {}]
# boto3 and what it depends on, which the Lambda Python runtime provides (distribution names)
RUNTIME_PROVIDED = {
    "boto3",
    "botocore",
    "s3transfer",
    "urllib3",
    "jmespath",
    "python-dateutil",
    "six",
}
COMPILED_LINE = re.compile(
    r"^lifecycle-probe layer (\S+): bytecode compiled for Python ([\d. ]+?) \(", re.MULTILINE
)
SIZE_LINE = re.compile(
    r"^lifecycle-probe layer (?P<arch>\S+) \(Python (?P<pythons>[\d. ]+)\): "
    r"[\d.]+ MB zipped \((?P<bytes>\d+) bytes\)",
    re.MULTILINE,
)


@dataclass(frozen=True)
class SamBuild:
    directory: Path
    output: str

    def layer(self, arch: str) -> Path:
        return (
            self.directory
            / {"x86_64": "LifecycleProbeLayerX86", "arm64": "LifecycleProbeLayerArm64"}[arch]
        )

    @property
    def zero_code(self) -> Path:
        return self.directory / "ZeroCodeFunction"


def sam_executable() -> str:
    beside = Path(sys.executable).with_name("sam")  # the venv's, from the dev extras
    if beside.is_file():
        return str(beside)
    found = shutil.which("sam")
    if found is None:
        pytest.fail("sam (aws-sam-cli, in the dev extras) is not installed")
    return found


@pytest.fixture(scope="session")
def sam_build(tmp_path_factory) -> SamBuild:
    work = tmp_path_factory.mktemp("sam")
    build_dir = work / "build"
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        # the Makefiles' pip: this interpreter's
        "PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    completed = subprocess.run(
        [sam_executable(), "build", "--template", str(TEMPLATE), "--build-dir", str(build_dir)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    return SamBuild(build_dir, output)


# -- the built layers -------------------------------------------------------------------------


def test_each_layer_says_which_python_versions_were_compiled(sam_build):
    compiled = dict(COMPILED_LINE.findall(sam_build.output))
    assert compiled == {"x86_64": "3.11", "aarch64": "3.11"}, sam_build.output


def test_each_layer_prints_its_zipped_size_under_the_limit(sam_build):
    lines = {m.group("arch"): m for m in SIZE_LINE.finditer(sam_build.output)}
    assert set(lines) == {"x86_64", "aarch64"}, sam_build.output
    for arch, line in lines.items():
        assert 500_000 < int(line.group("bytes")) < MAX_LAYER_ZIP_BYTES, line.group(0)
        assert line.group("pythons").split() == ["3.10", "3.11", "3.12", "3.13"], arch


@pytest.mark.parametrize(("arch", "machine"), [("x86_64", "x86_64"), ("arm64", "aarch64")])
def test_layer_holds_the_runtime_path_only(sam_build, arch, machine):
    layer = sam_build.layer(arch)
    python = layer / "python"
    # the wrapper at the layer's root (/opt/lifecycle-probe), executable, as in layer/
    wrapper = layer / "lifecycle-probe"
    assert wrapper.read_bytes() == (ROOT / "layer" / "lifecycle-probe").read_bytes()
    assert os.access(wrapper, os.X_OK)
    assert sorted(p.name for p in layer.iterdir()) == ["lifecycle-probe", "python"]
    # the probe without its development-only subpackages
    assert (python / "lifecycle_probe" / "handler.py").is_file()
    assert not (python / "lifecycle_probe" / "emulator").exists()
    assert not (python / "lifecycle_probe" / "demo").exists()
    # its runtime dependencies, not the runtime's own boto3/botocore
    installed = {
        d.metadata["Name"].lower().replace("_", "-") for d in distributions(path=[str(python)])
    }
    assert {
        "lifecycle-probe",
        "aws-lambda-powertools",
        "opentelemetry-api",
        "opentelemetry-sdk",
        "wrapt",
    } <= installed
    # the probe encodes and sends OTLP itself: no exporter package (issue 12)
    assert not {name for name in installed if name.startswith("opentelemetry-exporter")}
    # nothing the Lambda Python runtime provides (boto3 and its dependencies): the runtime's
    # precompiled copies serve
    assert not installed & (RUNTIME_PROVIDED | {"awslambdaric", "pytest"})
    for module in ("boto3", "botocore", "s3transfer", "urllib3", "jmespath", "dateutil"):
        assert not (python / module).exists(), module
    assert not (python / "six.py").exists()
    # bytecode for the Python versions found on PATH (python3.11 here), for every source
    assert not (python / "bin").exists()
    compiled = {
        tag: [
            source
            for source in python.rglob("*.py")
            if not (source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc").is_file()
        ]
        for tag in ("cpython-310", "cpython-311", "cpython-312", "cpython-313")
    }
    assert compiled["cpython-311"] == []  # every source compiled: none left out
    for tag in ("cpython-310", "cpython-312", "cpython-313"):  # not installed here
        assert not list(python.rglob(f"*.{tag}.pyc")), tag
    # wrapt's extension for every supported Python, of this architecture only
    extensions = sorted(p.name for p in (python / "wrapt").glob("*.so"))
    assert extensions == [
        f"_wrappers.cpython-3{minor}-{machine}-linux-gnu.so" for minor in (10, 11, 12, 13)
    ]
    # the version the project declares (as this checkout's install says)
    (probe,) = [
        d for d in distributions(path=[str(python)]) if d.metadata["Name"] == "lifecycle-probe"
    ]
    assert probe.version == version("lifecycle-probe")


# The probe's sinks imported from the built layer with only the Lambda runtime's packages
# beside it: this venv's boto3 and its dependencies stand in for /var/runtime's copies.
IMPORT_FROM_LAYER = """
import json, sys
import lifecycle_probe.handler  # noqa: the zero-code entry point's own imports
from lifecycle_probe.config import Config
from lifecycle_probe.sinks import build_sinks
from lifecycle_probe.sinks import emf
from lifecycle_probe.sinks.otel import exporters, pipeline, transport
from aws_lambda_powertools.metrics.provider import cloudwatch_emf
sinks = build_sinks(Config.resolve({}, exporter="emf,otlp,otlp-file", otlp_file=sys.argv[1]))
import boto3
print(json.dumps({
    "sinks": sorted(type(s).__name__ for s in sinks),
    "modules": {name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())},
}))
"""


def test_the_layers_dependencies_import_with_the_runtimes_packages(sam_build, tmp_path):
    # GIVEN the runtime's packages (boto3 and its dependencies, this venv's copies) in a
    # directory of their own, after the layer's python directory, and nothing else
    runtime = tmp_path / "var-runtime"
    runtime.mkdir()
    import boto3

    for entry in Path(boto3.__file__ or "").parents[1].iterdir():
        name = entry.name.lower().replace("_", "-")
        top = name.split("-")[0] if entry.suffix == ".dist-info" else name.removesuffix(".py")
        if top in {"boto3", "botocore", "s3transfer", "urllib3", "jmespath", "six"} or (
            top in {"dateutil", "python-dateutil", "python"} and "dateutil" in name
        ):
            (runtime / entry.name).symlink_to(entry)
    layer_python = sam_build.layer("x86_64") / "python"
    # WHEN a bare interpreter (no site-packages) imports the probe's sinks from the layer
    completed = subprocess.run(
        [sys.executable, "-S", "-c", IMPORT_FROM_LAYER, str(tmp_path / "otlp.jsonl")],
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": f"{layer_python}{os.pathsep}{runtime}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LIFECYCLE_PROBE_HANDLER": "json.dumps",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    seen = json.loads(completed.stdout.splitlines()[-1])
    # THEN every sink was built
    assert seen["sinks"] == ["EmfSink", "LogSink", "OtelSink"]
    modules = {name: path for name, path in seen["modules"].items() if path}
    # the runtime's packages come from the runtime's directory, everything else of the
    # probe's from the layer
    for name, path in modules.items():
        top = name.split(".")[0]
        if top in {"boto3", "botocore", "s3transfer", "urllib3", "jmespath", "dateutil", "six"}:
            assert path.startswith(str(runtime)), (name, path)
        elif top in {"lifecycle_probe", "opentelemetry", "aws_lambda_powertools", "wrapt"}:
            assert path.startswith(str(layer_python)), (name, path)
    assert {"urllib3", "lifecycle_probe.sinks.otel.transport", "wrapt"} <= modules.keys()


# -- the built zero-code function in the local Lambda -----------------------------------------


def start_zero_code(local_lambda, sam_build: SamBuild, wrapper: Path | None, **env: str) -> Any:
    variables = {"ZERO_CODE_EXEC_WRAPPER": str(wrapper) if wrapper else "", **env}
    return local_lambda(
        "zero_code.handler",
        sam_build.zero_code,
        env=variables,
        exec_wrapper=MANAGED_RUNTIME,
        function_name="zero-code",
        timeout_s=30.0,
    )


def otlp_env(path: Path) -> dict[str, str]:
    return {
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
        "LIFECYCLE_PROBE_OTLP_FILE": str(path),
        # exported before each response: the file is complete when the last one is back
        "LIFECYCLE_PROBE_FLUSH": "sync",
    }


def expected_responses(probe_file: str | None) -> list[dict[str, Any]]:
    return [
        {
            "invocations": n,
            "echo": event,
            "total": total_,
            "function": "zero-code",
            "boto3": version("boto3"),
            "probe_file": probe_file,
        }
        for n, (event, total_) in enumerate(zip(EVENTS, ["3.5", "4", "0"], strict=True), start=1)
    ]


def assert_instrumented_run(sam_build: SamBuild, emulator: Any, otlp: Path) -> list[Any]:
    results = [emulator.invoke(event) for event in EVENTS]
    assert [r.outcome for r in results] == ["ok"] * len(EVENTS), [r.error for r in results]
    # the layer's copy of the probe ran, not the checkout's on this venv's path
    layer_probe = sam_build.layer("x86_64") / "python" / "lifecycle_probe" / "__init__.py"
    assert [r.response for r in results] == expected_responses(str(layer_probe))
    # one environment: cold, then warm
    assert len({r.environment for r in results}) == 1
    assert [r.start_type_truth for r in results] == ["cold", "warm", "warm"]
    spans, points = read_otlp(otlp)
    invocations = {s["attrs"]["faas.invocation_id"]: s for s in spans if s["kind"] == 2}
    assert [invocations[r.request_id]["attrs"]["lifecycle.start"] for r in results] == [
        "cold",
        "warm",
        "warm",
    ]
    assert [invocations[r.request_id]["attrs"]["faas.coldstart"] for r in results] == [
        True,
        False,
        False,
    ]
    assert [invocations[r.request_id]["attrs"]["lifecycle.invocation_seq"] for r in results] == [
        1,
        2,
        3,
    ]
    # INIT from the wrapper's hand-over, inside the runtime process's spawn, before the
    # function's imports, which are traced under it
    (init,) = [s for s in spans if s["name"] == "lambda.init"]
    assert init["attrs"]["lifecycle.init.start_source"] == "exec-wrapper"
    assert init["attrs"]["lifecycle.init.end_source"] == "runtime"
    assert init["parentSpanId"] == invocations[results[0].request_id]["spanId"]
    environment = emulator.environment(results[0].environment)
    init_start = int(init["startTimeUnixNano"])
    assert environment.spawn_start_ns <= init_start
    imports = {s["attrs"]["code.namespace"]: s for s in spans if s["name"] == "lambda.import"}
    function, sdk = imports["zero_code"], imports["boto3"]
    assert function["attrs"]["lifecycle.import.origin"] == "function"
    assert init_start < int(function["startTimeUnixNano"])
    assert int(function["endTimeUnixNano"]) <= int(init["endTimeUnixNano"])
    assert sdk["parentSpanId"] == function["spanId"]
    assert int(function["startTimeUnixNano"]) <= int(sdk["startTimeUnixNano"])
    assert total(points, "faas.invocations") == len(EVENTS)
    assert total(points, "faas.coldstarts") == 1
    return results


def test_built_function_and_layer_run_through_the_built_wrapper(local_lambda, sam_build, tmp_path):
    # GIVEN the built function alone: what it answers without the probe
    bare = start_zero_code(local_lambda, sam_build, None)
    baseline = [bare.invoke(event).response for event in EVENTS]
    bare.close()
    assert baseline == expected_responses(None)
    # WHEN it runs behind the built layer's wrapper
    otlp = tmp_path / "otlp.jsonl"
    wrapper = sam_build.layer("x86_64") / "lifecycle-probe"
    emulator = start_zero_code(local_lambda, sam_build, wrapper, **otlp_env(otlp))
    # THEN the same answers (the probe's location aside), and the lifecycle in OTLP
    results = assert_instrumented_run(sam_build, emulator, otlp)
    logs = emulator.logs(results[0].environment)
    assert "Traceback" not in logs


def test_built_wrapper_chained_behind_another_wrapper(local_lambda, sam_build, tmp_path):
    # GIVEN another layer's wrapper that runs first, then execs the probe's
    notes = tmp_path / "other-wrapper.txt"
    other = tmp_path / "other-wrapper"
    built = sam_build.layer("x86_64") / "lifecycle-probe"
    other.write_text(
        "#!/bin/bash\n"
        "# another layer's exec wrapper: notes what it saw, then runs the next one\n"
        f'echo "$$ $_HANDLER $AWS_LAMBDA_EXEC_WRAPPER" >> "{notes}"\n'
        f'exec "{built}" "$@"\n'
    )
    other.chmod(0o755)
    otlp = tmp_path / "otlp.jsonl"
    emulator = start_zero_code(local_lambda, sam_build, other, **otlp_env(otlp))
    # WHEN invoked cold then warm
    results = assert_instrumented_run(sam_build, emulator, otlp)
    # THEN the other wrapper ran once, in the runtime's own process, before the probe's
    # wrapper moved the handler
    assert notes.read_text().splitlines() == [f"{results[0].pid} zero_code.handler {other}"]
