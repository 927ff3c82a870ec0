"""/tmp and memory across reuse, measured in real runtime processes (awslambdaric)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emf_spec import json_lines, metric_values
from tests.integration.probe.otlp import read_otlp

pytestmark = pytest.mark.integration

HANDLERS = Path(__file__).resolve().parents[1] / "fixtures" / "resource_handlers"
MIB = 1024 * 1024


def probe_env(path, **more):
    return {
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file,emf",
        "LIFECYCLE_PROBE_OTLP_FILE": str(path),
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        **more,
    }


def invocation_spans(path):
    spans, points = read_otlp(path)
    invocations = [s for s in spans if s["name"] == "resources-fn"]
    invocations.sort(key=lambda s: s["attrs"]["lifecycle.invocation_seq"])
    return invocations, points


def test_tmp_use_and_growth_per_invocation_and_the_warning(local_lambda, tmp_path):
    # GIVEN a function that writes 64 KB to /tmp on every invocation, with 1 MB of
    # ephemeral storage and a warning at half of it
    path = tmp_path / "otlp.jsonl"
    env = probe_env(
        path, AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE="1", LIFECYCLE_PROBE_TMP_WARN_SHARE="0.5"
    )
    emulator = local_lambda(
        "growing_tmp.handler",
        HANDLERS,
        function_name="resources-fn",
        env=env,
        log_dir=tmp_path / "logs",
    )
    # WHEN one environment serves 10 invocations
    results = [emulator.invoke({"kb": 64}) for _ in range(10)]
    emulator.close()
    (env_id,) = {r.environment for r in results}
    # the local Lambda gives the environment a private /tmp of its own
    assert {r.response["tmpdir"] for r in results} == {str(tmp_path / "logs" / f"{env_id}.tmp")}
    spans, points = invocation_spans(path)
    assert len(spans) == 10
    # THEN each invocation's span carries the bytes /tmp holds (what the files occupy, as
    # the handler itself counted them, plus nothing else) and the growth since the last
    for span, result in zip(spans, results, strict=True):
        assert span["attrs"]["lifecycle.tmp.used_bytes"] == result.response["blocks"]
    growths = [s["attrs"]["lifecycle.tmp.growth_bytes"] for s in spans[1:]]
    assert "lifecycle.tmp.growth_bytes" not in spans[0]["attrs"]
    for growth in growths:  # 64 KB, within one filesystem block
        assert 64 * 1024 <= growth <= 64 * 1024 + 8192
    # and the histogram saw the same figures
    tmp_points = [p for p in points if p["metric"] == "lifecycle.tmp.used"]
    assert sum(float(p["sum"]) for p in tmp_points) == pytest.approx(
        sum(r.response["blocks"] for r in results)
    )
    # AND the warning, once, when the environment crossed half of 1 MB (the 8th write)
    crossed = next(i for i, r in enumerate(results) if r.response["blocks"] >= 0.5 * MIB)
    warned = [
        (s["attrs"]["lifecycle.invocation_seq"], e)
        for s in spans
        for e in s.get("events", [])
        if e["name"] == "lifecycle.tmp.threshold"
    ]
    assert [seq for seq, _ in warned] == [crossed + 1]
    warnings_metric = [p for p in points if p["metric"] == "lifecycle.tmp.warnings"]
    assert sum(int(p["asInt"]) for p in warnings_metric) == 1
    lines = json_lines(emulator.logs(env_id))
    warning_lines = [line for line in lines if line.get("lifecycle_probe") == "tmp_threshold"]
    assert len(warning_lines) == 1
    assert warning_lines[0]["tmp_limit_bytes"] == MIB
    assert warning_lines[0]["lifecycle_invocation_seq"] == crossed + 1
    # the EMF documents say the same
    documents = {d["lifecycle_invocation_seq"]: d for d in lines if "_aws" in d}
    assert metric_values(documents[3])["TmpUsed"] == [float(results[2].response["blocks"])]
    assert 64 * 1024 <= metric_values(documents[3])["TmpGrowth"][0] <= 64 * 1024 + 8192
    assert metric_values(documents[crossed + 1])["TmpWarnings"] == [1.0]
    assert sum("TmpWarnings" in metric_values(d) for d in documents.values()) == 1


def test_memory_kept_per_invocation_gives_one_growth_warning(local_lambda, tmp_path):
    # GIVEN a handler that keeps 1 MB in a global on every invocation
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(
        "memory.handler",
        HANDLERS,
        function_name="resources-fn",
        env=probe_env(path),
        memory_mb=512,
        log_dir=tmp_path / "logs",
    )
    # WHEN one environment serves 14 invocations (13 warm)
    results = [emulator.invoke({"keep_kb": 1024}) for _ in range(14)]
    emulator.close()
    (env_id,) = {r.environment for r in results}
    spans, points = invocation_spans(path)
    rss = [s["attrs"]["lifecycle.memory.rss_bytes"] for s in spans]
    # THEN RSS after each invocation grows by about 1 MB each time, a share of 512 MB
    assert all(8 * MIB < value < 512 * MIB for value in rss)
    assert 0.7 * MIB < (rss[-1] - rss[1]) / 12 < 1.5 * MIB
    for span in spans:
        share = span["attrs"]["lifecycle.memory.share"]
        assert share == pytest.approx(span["attrs"]["lifecycle.memory.rss_bytes"] / (512 * MIB))
    # AND one warning, after 10 warm invocations, with a rate near 1 MB per invocation
    events = [
        e for s in spans for e in s.get("events", []) if e["name"] == "lifecycle.memory.growth"
    ]
    assert len(events) == 1
    rate = {a["key"]: a["value"] for a in events[0]["attributes"]}
    rate_bytes = int(rate["lifecycle.memory.growth_bytes_per_invocation"]["intValue"])
    assert 0.8 * MIB < rate_bytes < 1.3 * MIB
    lines = json_lines(emulator.logs(env_id))
    warnings = [line for line in lines if line.get("lifecycle_probe") == "memory_growth"]
    assert len(warnings) == 1
    assert warnings[0]["lifecycle_invocation_seq"] == 11
    assert "MB per invocation" in warnings[0]["message"]
    assert (
        sum(int(p["asInt"]) for p in points if p["metric"] == "lifecycle.memory.growth_warnings")
        == 1
    )
    rss_points = [p for p in points if p["metric"] == "lifecycle.memory.rss"]
    assert sum(float(p["sum"]) for p in rss_points) == pytest.approx(sum(rss))
    documents = [d for d in lines if "_aws" in d]
    assert sum("MemoryGrowthWarnings" in metric_values(d) for d in documents) == 1
    assert all(metric_values(d)["MemoryRss"][0] > 8 * MIB for d in documents)


def test_a_steady_handler_gives_no_growth_warning(local_lambda, tmp_path):
    # GIVEN a handler that allocates and frees 1 MB on every invocation
    path = tmp_path / "otlp.jsonl"
    emulator = local_lambda(
        "memory.handler",
        HANDLERS,
        function_name="resources-fn",
        env=probe_env(path),
        log_dir=tmp_path / "logs",
    )
    results = [emulator.invoke({"scratch_kb": 1024}) for _ in range(14)]
    emulator.close()
    spans, _ = invocation_spans(path)
    assert len(spans) == 14
    # THEN no warning
    assert not [
        e for s in spans for e in s.get("events", []) if e["name"] == "lifecycle.memory.growth"
    ]
    log = emulator.logs(results[0].environment)
    assert "memory_growth" not in log
