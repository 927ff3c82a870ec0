"""The probe's own threads (extension, exporter) never report their connections as stale."""

import threading

from lifecycle_probe.connections.tracking import RISK, ConnectionState, Reuse, _note
from lifecycle_probe.environment import current_environment, mark_probe_thread, probe_threads


def note_a_risk():
    state = ConnectionState("urllib3", None, "127.0.0.1", 4318)
    _note(state, Reuse(120.0, 300.0, "init", 1, "alive"), RISK, None)


def test_a_connection_of_the_function_is_reported_and_one_of_a_probe_thread_is_not():
    env = current_environment()
    note_a_risk()  # the function's own thread
    (event,) = env.take_events()
    attributes = dict(event.attributes)
    assert attributes["server.port"] == 4318
    assert "db.system" not in attributes  # HTTP has none

    def probe_thread():
        mark_probe_thread()
        try:
            note_a_risk()
        finally:
            probe_threads.discard(threading.get_ident())

    worker = threading.Thread(target=probe_thread)
    worker.start()
    worker.join()
    assert env.take_events() == ()
