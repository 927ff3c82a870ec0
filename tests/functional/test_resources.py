"""/tmp and memory across reuse: the pure rules (resources.py) and the probe's use of them."""

from __future__ import annotations

import os

import pytest

from lifecycle_probe import probe, resources
from lifecycle_probe._safe import forget_warnings
from lifecycle_probe.config import Config
from lifecycle_probe.records import MEMORY_EVENT, TMP_EVENT
from lifecycle_probe.resources import (
    MAX_WALK_ENTRIES,
    MEMORY_MIN_SAMPLES,
    MIB,
    ResourceWatch,
    ephemeral_storage_bytes,
    rss_bytes,
    statvfs_used,
    steady_growth,
    temporary_directory,
    walk_used,
)
from lifecycle_probe.testing import FakeContext, capture_records, fresh_environment

# -- the steady-growth rule ------------------------------------------------------------------


def test_a_steady_leak_gives_its_rate():
    samples = [100 * MIB + i * MIB for i in range(12)]
    assert steady_growth(samples) == pytest.approx(MIB)


def test_a_noisy_leak_still_counts_when_most_steps_rise():
    # 1 MB per invocation with page-sized noise and two small dips
    noise = [0, 8192, -4096, 4096, 0, -8192, 4096, 0, 8192, 0, -4096, 4096]
    samples = [100 * MIB + i * MIB + n for i, n in enumerate(noise)]
    samples[4] = samples[3] - 4096
    assert steady_growth(samples) == pytest.approx(MIB, rel=0.15)


def test_too_few_samples_give_no_verdict():
    samples = [100 * MIB + i * MIB for i in range(MEMORY_MIN_SAMPLES - 1)]
    assert steady_growth(samples) is None


def test_a_one_off_jump_is_no_leak():
    # a lazy cache of 50 MB filled once, then flat
    samples = [100 * MIB] * 5 + [150 * MIB] * 7
    assert steady_growth(samples) is None


def test_noise_around_a_level_is_no_leak():
    samples = [100 * MIB + (4096 if i % 2 else -4096) for i in range(20)]
    assert steady_growth(samples) is None


def test_a_creep_under_the_floor_is_not_reported_yet():
    samples = [100 * MIB + i * 100 * 1024 for i in range(12)]  # 1.1 MB in all
    assert steady_growth(samples) is None


def test_a_shrinking_process_is_no_leak():
    samples = [200 * MIB - i * MIB for i in range(12)]
    assert steady_growth(samples) is None


def test_the_watch_warns_once_per_environment_and_only_on_warm_invocations(monkeypatch):
    readings = iter([500 * MIB] + [100 * MIB + i * MIB for i in range(30)] * 2)
    monkeypatch.setattr(resources, "rss_bytes", lambda: next(readings))
    monkeypatch.setattr(resources, "temporary_directory", lambda environ=None: "/nonexistent")
    watch = ResourceWatch(0.8)
    warned = [watch.after_invocation("env-a", seq).growth_rate for seq in range(1, 31)]
    # the first (cold) reading is not a sample: 10 warm ones are needed, so the 11th warns
    assert [i + 1 for i, rate in enumerate(warned) if rate is not None] == [11]
    assert warned[10] == pytest.approx(MIB)
    # a new environment (a fork, a restore) starts over
    again = [watch.after_invocation("env-b", seq).growth_rate for seq in range(1, 13)]
    assert [i + 1 for i, rate in enumerate(again) if rate is not None] == [11]


# -- /tmp ----------------------------------------------------------------------------------


def test_the_walk_counts_blocks_of_files_and_subdirectories(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 10_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 100_000)
    (tmp_path / "link").symlink_to("/etc")  # not followed
    expected = sum(
        os.lstat(p).st_blocks * 512
        for p in (
            tmp_path / "a.bin",
            tmp_path / "sub",
            tmp_path / "sub" / "b.bin",
            tmp_path / "link",
        )
    )
    assert walk_used(str(tmp_path)) == (expected, True)
    assert expected >= 110_000


def test_the_walk_stops_at_its_bound(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i}").write_bytes(b"z" * 5000)
    used, complete = walk_used(str(tmp_path), max_entries=10)
    assert not complete
    assert used == sum(os.stat(tmp_path / "f0").st_blocks * 512 for _ in range(10))
    assert MAX_WALK_ENTRIES == 1000


def test_a_directory_beyond_the_bound_is_given_up_once(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(resources, "MAX_WALK_ENTRIES", 10)
    walks = []
    real_walk = resources.walk_used

    def counted(path, max_entries=10):
        walks.append(path)
        return real_walk(path, max_entries)

    monkeypatch.setattr(resources, "walk_used", counted)
    for i in range(30):
        (tmp_path / f"f{i}").write_bytes(b"z")
    # in a Lambda function: said once
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")
    watch = ResourceWatch(0.8)
    assert watch.tmp_used(str(tmp_path)) is None
    assert watch.tmp_used(str(tmp_path)) is None
    assert walks == [str(tmp_path)]  # walked once, never again
    assert "is not measured" in caplog.text
    # in a script or a test run (a developer's /tmp): silently
    caplog.clear()
    forget_warnings()
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    assert ResourceWatch(0.8).tmp_used(str(tmp_path)) is None
    assert "is not measured" not in caplog.text


def test_a_mount_point_is_read_with_one_statvfs(monkeypatch, tmp_path):
    watch = ResourceWatch(0.8)
    # / is a mount point everywhere: statvfs, never a walk
    monkeypatch.setattr(resources, "walk_used", lambda *a, **k: pytest.fail("walked"))
    stat = os.statvfs("/")
    used = watch.tmp_used("/")
    assert used is not None
    assert abs(used - (stat.f_blocks - stat.f_bfree) * stat.f_frsize) < 64 * MIB
    assert statvfs_used("/") > 0
    # a plain directory is walked
    monkeypatch.undo()
    (tmp_path / "f").write_bytes(b"a" * 5000)
    assert watch.tmp_used(str(tmp_path)) == os.stat(tmp_path / "f").st_blocks * 512
    assert watch.tmp_used(str(tmp_path / "missing")) is None


def test_tmpdir_is_honoured_and_storage_defaults_to_512_mb():
    assert temporary_directory({"TMPDIR": "/x"}) == "/x"
    assert temporary_directory({}) == "/tmp"
    assert ephemeral_storage_bytes({}) == 512 * MIB
    assert (
        ephemeral_storage_bytes({"AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE": "10240"}) == 10 * 1024**3
    )
    assert ephemeral_storage_bytes({"AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE": "lots"}) == 512 * MIB


def test_rss_is_read_from_statm(tmp_path):
    rss = rss_bytes()
    assert rss is not None
    assert 5 * MIB < rss < 4 * 1024**3
    fake = tmp_path / "statm"
    fake.write_text("1000 250 30 1 0 200 0\n")
    assert rss_bytes(str(fake)) == 250 * os.sysconf("SC_PAGE_SIZE")
    assert rss_bytes(str(tmp_path / "none")) is None


def test_rss_survives_its_kept_descriptor_being_closed_or_reused(tmp_path):
    # GIVEN the probe's /proc/self/statm descriptor, kept open between readings
    assert rss_bytes() is not None
    (kept,) = resources._statm
    # WHEN the function closes it, and its number then goes to a file of its own
    os.close(kept)
    other = tmp_path / "other"
    other.write_text("not statm at all\n")
    fd = os.open(other, os.O_RDONLY)
    try:
        # THEN the next reading opens statm anew and never reads (nor closes) that file
        rss = rss_bytes()
        assert rss is not None
        assert 5 * MIB < rss < 4 * 1024**3
        assert os.read(fd, 3) == b"not"
    finally:
        os.close(fd)


def test_a_forked_child_reads_its_own_rss():
    assert rss_bytes() is not None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own statm, not the parent's inherited descriptor
        try:
            with open("/proc/self/statm") as statm:
                own = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            got = rss_bytes() or 0
            os.write(write_end, b"ok" if abs(got - own) < 4 * MIB else b"no")
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    assert os.read(read_end, 2) == b"ok"
    os.close(read_end)


# -- the option ------------------------------------------------------------------------------


def test_tmp_warn_share_is_an_option_bounded_0_to_1(caplog):
    assert Config.resolve({}).tmp_warn_share == 0.8
    assert Config.resolve({"LIFECYCLE_PROBE_TMP_WARN_SHARE": "0.5"}).tmp_warn_share == 0.5
    assert Config.resolve({}, tmp_warn_share=0.25).tmp_warn_share == 0.25
    assert Config.resolve({"LIFECYCLE_PROBE_TMP_WARN_SHARE": "1.5"}).tmp_warn_share == 0.8
    assert "LIFECYCLE_PROBE_TMP_WARN_SHARE" in caplog.text
    assert Config.resolve({"LIFECYCLE_PROBE_TMP_WARN_SHARE": "-0.1"}).tmp_warn_share == 0.8


# -- through the probe --------------------------------------------------------------------------


def test_records_carry_tmp_and_memory_and_the_tmp_warning_once(monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_EPHEMERAL_STORAGE", "1")
    fresh_environment()

    @probe(exporter="none")
    def handler(event, context):
        (tmp_path / f"part{event['n']}").write_bytes(b"p" * 300_000)
        return event

    with capture_records() as captured:
        for n in range(4):
            handler({"n": n}, FakeContext())
    records = captured.records
    used = [r.tmp_used_bytes or 0 for r in records]
    assert used == sorted(used)
    assert used[0] >= 300_000
    growths = [r.tmp_growth_bytes for r in records]
    assert growths[0] is None
    assert all(g is not None and 300_000 <= g <= 300_000 + 8192 for g in growths[1:])
    assert all(r.rss_bytes and r.rss_bytes > 5 * MIB for r in records)
    # 0.8 of 1 MB is crossed by the third file: one event there, none after
    events = [[e.name for e in r.events] for r in records]
    assert events == [[], [], [TMP_EVENT], []]
    (event,) = records[2].events
    assert dict(event.attributes)["lifecycle.tmp.limit_bytes"] == MIB
    assert MEMORY_EVENT not in str(events)


def test_a_failing_reading_never_reaches_the_handler(monkeypatch):
    fresh_environment()

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(ResourceWatch, "after_invocation", broken)

    @probe(exporter="none")
    def handler(event, context):
        return "same"

    with capture_records() as captured:
        assert handler({}, FakeContext()) == "same"
    (record,) = captured.records
    assert (record.rss_bytes, record.tmp_used_bytes, record.tmp_growth_bytes) == (None, None, None)


def test_the_tmp_share_given_to_probe_is_the_processs_and_a_second_one_warns(caplog):
    import logging

    from lifecycle_probe import probe, resources
    from lifecycle_probe.testing import fresh_environment

    fresh_environment()
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        probe(exporter="console", tmp_warn_share=0.25)(lambda e, c: None)
        probe(exporter="console", tmp_warn_share=0.5)(lambda e, c: None)
    assert resources.resource_watch().tmp_warn_share == 0.25
    (warning,) = [r.getMessage() for r in caplog.records if "tmp_warn_share" in r.getMessage()]
    assert "0.5" in warning


def test_the_tmp_share_asked_for_beats_the_variables_and_is_read_when_first_needed(
    monkeypatch, caplog
):
    import logging

    from lifecycle_probe import probe, resources
    from lifecycle_probe.testing import fresh_environment

    # GIVEN a variable, then a probe whose argument asks for another share
    monkeypatch.setenv("LIFECYCLE_PROBE_TMP_WARN_SHARE", "0.5")
    fresh_environment()
    with caplog.at_level(logging.WARNING, logger="lifecycle_probe"):
        probe(exporter="console")(lambda e, c: None)
        probe(exporter="console", tmp_warn_share=0.25)(lambda e, c: None)
        # WHEN the watch is first needed
        share = resources.resource_watch().tmp_warn_share
    # THEN the argument's share is in force (one per process, an argument beats a
    # variable), without a warning: nobody asked for the variable's value
    assert share == 0.25
    assert not [r for r in caplog.records if "tmp_warn_share" in r.getMessage()]


def test_install_gives_its_tmp_share_to_every_probe(monkeypatch):
    from lifecycle_probe import install, probe, resources
    from lifecycle_probe.testing import fresh_environment

    monkeypatch.delenv("LIFECYCLE_PROBE_TMP_WARN_SHARE", raising=False)
    fresh_environment()
    assert install(tmp_warn_share=0.3)
    probe(exporter="console")(lambda e, c: None)
    assert resources.resource_watch().tmp_warn_share == 0.3


def test_a_tmp_share_asked_for_after_the_first_record_is_the_watchs_from_then_on(monkeypatch):
    from lifecycle_probe import probe, resources
    from lifecycle_probe.testing import FakeContext, capture_records, fresh_environment

    # GIVEN a probe on the default share whose invocation has made the watch
    monkeypatch.delenv("LIFECYCLE_PROBE_TMP_WARN_SHARE", raising=False)
    fresh_environment()
    first = probe(exporter="console")(lambda e, c: None)
    with capture_records():
        first({}, FakeContext())
    assert resources.resource_watch().tmp_warn_share == 0.8
    # WHEN a second probe's argument asks for another share
    probe(exporter="console", tmp_warn_share=0.5)(lambda e, c: None)
    # THEN the watch made already uses it (an argument beats a default)
    assert resources.resource_watch().tmp_warn_share == 0.5
