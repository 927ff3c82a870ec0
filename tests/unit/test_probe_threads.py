"""The probe's own threads (extension, exporter) and work are never taken for the function's."""

import threading

from lifecycle_probe.connections.tracking import RISK, ConnectionState, Reuse, _note
from lifecycle_probe.environment import current_environment
from lifecycle_probe.probe_threads import in_probe_work, mark_probe_thread, probe_work
from lifecycle_probe.testing import capture_records


def note_a_risk():
    state = ConnectionState("urllib3", None, "127.0.0.1", 4318)
    # A sink must take the event: with none (exporter="none") nothing is noted at all.
    with capture_records():
        _note(state, Reuse(120.0, 300.0, "init", 1, "alive"), RISK, None)


def in_a_thread(work):
    """Run ``work`` in a new thread and return what it returned."""
    results = []
    worker = threading.Thread(target=lambda: results.append(work()))
    worker.start()
    worker.join()
    return results[0]


def test_a_connection_of_the_function_is_reported_and_one_of_a_probe_thread_is_not():
    env = current_environment()
    note_a_risk()  # the function's own thread
    (event,) = env.take_events()
    attributes = dict(event.attributes)
    assert attributes["server.port"] == 4318
    assert "db.system" not in attributes  # HTTP has none

    def probe_thread():
        mark_probe_thread()
        note_a_risk()

    in_a_thread(probe_thread)
    assert env.take_events() == ()


def test_probe_work_blocks_nest_and_end_on_their_own_thread_only():
    assert in_probe_work() is False
    with probe_work():
        assert in_probe_work() is True
        with probe_work():
            assert in_probe_work() is True
        assert in_probe_work() is True  # still inside the outer block
        # another thread is doing the function's work meanwhile
        assert in_a_thread(in_probe_work) is False
    assert in_probe_work() is False


def test_a_marked_thread_is_the_probes_for_the_rest_of_its_life_and_no_other_is():
    def marked():
        mark_probe_thread()
        return in_probe_work()

    assert in_a_thread(marked) is True
    assert in_probe_work() is False


def test_a_thread_given_the_ident_of_an_ended_probe_thread_is_not_the_probes():
    # GIVEN a probe thread (an exporter's, say) that ended
    def marked():
        mark_probe_thread()
        with probe_work():
            pass  # a block's end leaves the mark
        return threading.get_ident(), in_probe_work()

    ident, marked_then = in_a_thread(marked)
    assert marked_then is True
    # WHEN the function's later threads are given idents until that one comes back (the
    # C library reuses an ended thread's stack, and the ident is its address; another
    # thread ending meanwhile, a daemon of an earlier test, can take a turn first)
    seen: list[tuple[int, bool]] = []
    while len(seen) < 2000 and (not seen or seen[-1][0] != ident):
        seen.append(in_a_thread(lambda: (threading.get_ident(), in_probe_work())))
    # THEN it came back, and neither it nor any other is the probe's
    assert seen[-1][0] == ident
    assert [work for _, work in seen] == [False] * len(seen)
