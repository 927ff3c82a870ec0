"""Where the zero-code tests' pieces are: the layer's exec wrapper, the stand-ins for a
managed runtime and for the OpenTelemetry layer, the handler fixtures. A plain module, for
the conftest and the tests alike (a test importing a conftest gets a second copy of it)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
WRAPPER = ROOT / "layer" / "lifecycle-probe"
MANAGED_RUNTIME = HERE / "managed_runtime" / "bootstrap"
OTEL_INSTRUMENT = HERE / "otel_layer" / "otel-instrument"
FIXTURES = ROOT / "tests" / "integration" / "fixtures" / "zero_code_handlers"
