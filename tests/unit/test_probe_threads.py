"""The probe's own threads (extension, exporter) and work are never taken for the function's."""

import json
import subprocess
import sys
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


# Run in a fresh interpreter: the C library hands an ended thread's stack (whose address
# is the ident) to the next thread started, unless another thread ends meanwhile, as an
# earlier test's daemon can in this process; alone, the ident comes back at once.
IDENT_REUSE = """
import json, threading
from lifecycle_probe.probe_threads import in_probe_work, mark_probe_thread, probe_work


def in_a_thread(work):
    results = []
    worker = threading.Thread(target=lambda: results.append(work()))
    worker.start()
    worker.join()
    return results[0]


def marked():
    mark_probe_thread()
    with probe_work():
        pass  # a block's end leaves the mark
    return threading.get_ident(), in_probe_work()


ident, marked_then = in_a_thread(marked)
seen = [in_a_thread(lambda: (threading.get_ident(), in_probe_work())) for _ in range(20)]
print(json.dumps({"ident": ident, "marked": marked_then, "seen": seen}))
"""


def test_a_thread_given_the_ident_of_an_ended_probe_thread_is_not_the_probes():
    # GIVEN a probe thread (an exporter's, say) that ended
    # WHEN the function's later threads are given idents, that one among them
    result = subprocess.run(
        [sys.executable, "-c", IDENT_REUSE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["marked"] is True
    # THEN the ident came back (the OS reused the stack), and none of them is the probe's
    assert run["ident"] in [ident for ident, _ in run["seen"]]
    assert [work for _, work in run["seen"]] == [False] * 20
