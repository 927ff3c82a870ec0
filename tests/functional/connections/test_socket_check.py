"""The zero-traffic socket check, on a local socket pair (no server needed)."""

from __future__ import annotations

from lifecycle_probe.connections.tracking import CHECK_ALIVE, CHECK_DEAD, peer_closed


def _never(data):
    return False


def test_an_idle_live_socket_is_alive_and_nothing_is_consumed(pair):
    ours, theirs = pair
    assert peer_closed(ours.fileno(), _never) == CHECK_ALIVE
    theirs.sendall(b"A-notification")
    assert peer_closed(ours.fileno(), _never) == CHECK_ALIVE
    # The peeked bytes are still there for the driver.
    assert ours.recv(100) == b"A-notification"


def test_a_socket_closed_by_the_peer_is_dead(pair):
    ours, theirs = pair
    theirs.close()
    assert peer_closed(ours.fileno(), _never) == CHECK_DEAD
    # The descriptor still belongs to the driver.
    assert ours.fileno() >= 0


def test_the_servers_parting_words_mean_dead(pair):
    ours, theirs = pair
    theirs.sendall(b"E\x00\x00\x00\x10SFATAL")
    assert peer_closed(ours.fileno(), lambda data: data[:1] == b"E") == CHECK_DEAD
