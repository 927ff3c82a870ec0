"""The fault matrix, ``otlp-file`` side: a disk that is full, a directory that is read-only.

Each case mounts a tiny tmpfs (the test needs root, as in CI's container; it skips
otherwise), lets a function export into it while the fault lasts, clears the fault and
reads the file: every invocation is there, or counted in ``lifecycle.telemetry.dropped``
(which arrives with the first line that fits), and the caller never noticed.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.faults.accounting import assert_one_warning_each
from tests.integration.probe.otlp import read_otlp

pytestmark = pytest.mark.integration

CALLER_BOUND_MS = 250.0


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs at ``tmp_path / "disk"``, unmounted at teardown."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory, leave_bytes: int = 512):
    """Fill the file system of ``directory`` up to ``leave_bytes`` of free space."""
    filler = directory / "filler"
    with open(filler, "wb") as out:
        stat = os.statvfs(directory)
        free = stat.f_bavail * stat.f_frsize
        out.write(b"\0" * max(0, free - leave_bytes))
    return filler


def accounted(path, request_ids):
    spans, points = read_otlp(path)
    delivered = {s["attrs"].get("faas.invocation_id") for s in spans} & set(request_ids)
    dropped = {
        signal: sum(
            int(p["asInt"])
            for p in points
            if p["metric"] == "lifecycle.telemetry.dropped" and p["attrs"]["signal"] == signal
        )
        for signal in ("spans", "metrics")
    }
    invocations = sum(int(p["asInt"]) for p in points if p["metric"] == "faas.invocations")
    return len(delivered), dropped, invocations, points


def run_through_fault(local_lambda, fault_handlers, path, clear_fault):
    env = {
        "LIFECYCLE_PROBE_EXPORTER": "otlp-file",
        "LIFECYCLE_PROBE_OTLP_FILE": str(path),
        "LIFECYCLE_PROBE_FLUSH_TIMEOUT_MS": "500",
    }
    emulator = local_lambda("probed_faults.handler", fault_handlers, env=env)
    results = [emulator.invoke({"return": {"n": n}}) for n in range(4)]
    assert [r.response for r in results] == [{"n": n} for n in range(4)]
    caller_ms = max(r.duration_ms for r in results[1:])
    assert caller_ms < CALLER_BOUND_MS
    clear_fault()
    results.append(emulator.invoke({"return": {"n": 4}}))
    log = emulator.logs(results[0].environment)
    emulator.close()  # every process gone: the file holds all there will be
    return results, log, caller_ms


def test_a_full_disk_loses_nothing_unaccounted(local_lambda, fault_handlers, tiny_disk):
    # GIVEN an OTLP file on a disk with 512 bytes left (a line takes kilobytes)
    path = tiny_disk / "otlp.jsonl"
    filler = fill(tiny_disk)
    results, log, caller_ms = run_through_fault(
        local_lambda, fault_handlers, path, clear_fault=filler.unlink
    )
    print(f"FIGURE disk full: caller max {caller_ms:.1f} ms")
    ids = [r.request_id for r in results]
    # THEN once there is room again, every invocation is in the file or counted
    delivered, dropped, invocations, points = accounted(path, ids)
    assert delivered + dropped["spans"] == len(ids), (delivered, dropped)
    assert invocations + dropped["metrics"] == len(ids)
    assert dropped["spans"] == 3  # given up after three refused flushes
    reasons = {p["attrs"]["reason"] for p in points if p["metric"] == "lifecycle.telemetry.dropped"}
    assert reasons == {"export_failed"}
    # AND every line in the file is whole (read_otlp parsed each one)
    warnings = assert_one_warning_each(log)
    assert any("ENOSPC" in w and "the OTLP file" in w for w in warnings), warnings


def test_a_read_only_directory_loses_nothing_unaccounted(local_lambda, fault_handlers, tiny_disk):
    # GIVEN an OTLP file in a directory mounted read-only (root ignores permission bits)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    path = tiny_disk / "otlp.jsonl"

    def writable_again():
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_disk)], check=True)

    results, log, caller_ms = run_through_fault(
        local_lambda, fault_handlers, path, clear_fault=writable_again
    )
    print(f"FIGURE read-only dir: caller max {caller_ms:.1f} ms")
    ids = [r.request_id for r in results]
    # THEN the file is created once it can be, and holds or counts every invocation
    delivered, dropped, invocations, _ = accounted(path, ids)
    assert delivered + dropped["spans"] == len(ids), (delivered, dropped)
    assert invocations + dropped["metrics"] == len(ids)
    warnings = assert_one_warning_each(log)
    assert any("EROFS" in w for w in warnings), warnings
