"""What a closing server leaves on an idle socket, as the descriptors and ``reusable`` see it.

No database server is needed: a socket pair (for the agreement of ``reusable`` with
tracking on every descriptor) and a real TLS 1.2 server on 127.0.0.1 (for what a server
closing an encrypted session sends before its FIN).
"""

from __future__ import annotations

import importlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from lifecycle_probe.connections.reuse import is_alive
from lifecycle_probe.connections.tracking import CHECK_DEAD, begin_reuse, new_connection
from tests.services import require_module


def _message(kind, body):
    """A PostgreSQL backend message: its type byte, an int32 length (itself included)."""
    return kind + (4 + len(body)).to_bytes(4, "big") + body


# The FATAL ErrorResponse a PostgreSQL backend sends when ended (pg_terminate_backend:
# SQLSTATE 57P01): fields S (severity), V, C (code), M (message), then a zero.
FATAL = _message(
    b"E",
    b"SFATAL\x00VFATAL\x00C57P01\x00Mterminating connection due to administrator command\x00\x00",
)
# A NotificationResponse (a NOTIFY: sender's pid, channel, payload), sent to an idle
# session that stays alive.
NOTIFY = _message(b"A", (42).to_bytes(4, "big") + b"jobs\x00\x00")
# An unencrypted TLS alert record (content type 0x15, TLS 1.2, two bytes: warning
# close_notify), as a server sends it before its handshake is done.
PLAIN_CLOSE_NOTIFY = b"\x15\x03\x03\x00\x02\x01\x00"
# An encrypted TLS 1.2 session's last records: the FATAL message as application data
# (0x17), then the encrypted close_notify alert (0x15).
ENCRYPTED_FATAL_THEN_ALERT = (
    b"\x17\x03\x03\x00\x08" + b"\x99" * 8 + b"\x15\x03\x03\x00\x1a" + b"\x42" * 26
)

# What each sample is, for the ids.
SAMPLES = {
    "fin": None,
    "fatal": FATAL,
    "notify": NOTIFY,
    "tls-alert": PLAIN_CLOSE_NOTIFY,
    "tls-fatal-alert": ENCRYPTED_FATAL_THEN_ALERT,
    "tls-data": b"\x17\x03\x03\x00\x08" + b"\x99" * 8,
    "redis-push": b">3\r\n$10\r\ninvalidate\r\n",
    "http-408": b"HTTP/1.1 408 Request Timeout\r\n\r\n",
}

DESCRIBED = ("psycopg2", "psycopg", "pymysql", "redis", "urllib3")


def _descriptor(name):
    """The descriptor tracking gives ``name``'s connections (what ``patch`` builds)."""
    module = require_module(name)
    driver = importlib.import_module(f"lifecycle_probe.connections._{name}")
    return driver.library(module)


def _connection_over(name, sock):
    """A connection of ``name`` whose socket is ``sock``, as ``reusable`` would hold it.

    PyMySQL, redis-py and urllib3 connections are their own classes, made unconnected and
    given the socket; psycopg2's and psycopg's cannot exist without a server, so they are
    stand-ins of the same module with the attributes the drivers read.
    """
    module = require_module(name)
    if name == "pymysql":
        connection = module.connections.Connection(defer_connect=True)
        connection._sock = sock
    elif name == "redis":
        connection = module.connection.Connection()
        connection._sock = sock
    elif name == "urllib3":
        connection = module.connection.HTTPConnection("127.0.0.1", 80)
        connection.sock = sock
    elif name == "psycopg2":
        cls = type("connection", (), {"__module__": "psycopg2.extensions", "closed": 0})
        connection = cls()
        connection.fileno = sock.fileno
    else:
        cls = type("Connection", (), {"__module__": "psycopg.connection"})
        connection = cls()
        connection.closed = connection.broken = False
        connection.pgconn = SimpleNamespace(socket=sock.fileno())
        connection.fileno = sock.fileno
    return connection


def _tracking_says_dead(library, fd):
    """Whether connection tracking's first use after a freeze finds the socket dead."""
    state = new_connection(library, None, None)
    state.last_use_ns -= 2_000_000_000  # idle long enough to be looked at
    begin_reuse(state, fd)
    reuse = state.reuse
    assert reuse is not None
    return reuse.check == CHECK_DEAD


def _wait_readable(sock):
    assert select.select([sock], [], [], 2.0)[0], "nothing arrived"
    time.sleep(0.05)  # the rest of what was sent (the FIN) too


@pytest.mark.parametrize("sample", SAMPLES, ids=list(SAMPLES))
@pytest.mark.parametrize("name", DESCRIBED)
def test_reusable_and_tracking_agree_on_every_descriptors_closing_bytes(name, sample, pair):
    # GIVEN an idle connection of the library whose server sent the sample (or closed)
    ours, theirs = pair
    library = _descriptor(name)
    connection = _connection_over(name, ours)
    data = SAMPLES[sample]
    if data is None:
        theirs.close()
    else:
        theirs.sendall(data)
    _wait_readable(ours)
    try:
        # WHEN reusable checks it, and tracking looks at it at its first use after a freeze
        # THEN both reach the same verdict, from the same descriptor
        assert (not is_alive(connection)) == _tracking_says_dead(library, ours.fileno())
    finally:
        if name in ("pymysql", "redis"):
            connection._sock = None
        elif name == "urllib3":
            connection.sock = None
    # and nothing was consumed: the bytes are still there for the driver
    if data is not None:
        assert ours.recv(len(data) + 1) == data


# ---- a real TLS server -------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate and key made by the ``openssl`` command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: no certificate for a TLS server")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


@pytest.fixture
def tls_session(certificate):
    """(client, server): both ends of a TLS 1.2 session over TCP on 127.0.0.1.

    TLS 1.2, as PostgreSQL negotiates it with ``ssl_max_protocol_version=TLSv1.2`` (or an
    older server): its alert records travel as content type 0x15. TLS 1.3 encrypts the
    record type too (every record reads 0x17), so a close_notify there cannot be told
    from data by its bytes.
    """
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(*certificate)
    server_context.maximum_version = ssl.TLSVersion.TLSv1_2
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client_raw = socket.create_connection(listener.getsockname(), timeout=5)
        server_raw, _ = listener.accept()
    made = {}

    def handshake():
        made["server"] = server_context.wrap_socket(server_raw, server_side=True)

    thread = threading.Thread(target=handshake)
    thread.start()
    client = client_context.wrap_socket(client_raw)
    thread.join(5)
    server = made["server"]
    assert client.version() == "TLSv1.2"
    yield client, server
    client.close()
    server.close()


def _close_with_notify(server):
    """Send close_notify and close, without waiting for the client's close_notify."""
    server.setblocking(False)
    try:
        server.unwrap()  # sends the alert; the client's reply never comes
    except ssl.SSLWantReadError:
        pass
    server.close()  # the FIN


def _waiting(client):
    """The bytes on the client's socket, peeked through a duplicate of its descriptor."""
    with socket.socket(fileno=os.dup(client.fileno())) as peek:
        return peek.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)


def _postgres_verdicts(client):
    """{who: dead?} of reusable (a psycopg2 connection over the socket) and of tracking
    with each PostgreSQL descriptor."""
    verdicts = {"reusable": not is_alive(_connection_over("psycopg2", client))}
    for name in ("psycopg2", "psycopg"):
        verdicts[name] = _tracking_says_dead(_descriptor(name), client.fileno())
    return verdicts


def test_a_tls_server_sending_close_notify_then_fin_is_dead_to_all(tls_session):
    client, server = tls_session
    # WHEN the server ends the encrypted session: close_notify, then FIN
    _close_with_notify(server)
    _wait_readable(client)
    # THEN what waits is one TLS alert record (0x15, version 3.3, an encrypted 2-byte alert)
    waiting = _waiting(client)
    assert waiting[:3] == b"\x15\x03\x03"
    assert len(waiting) == 5 + int.from_bytes(waiting[3:5], "big")
    # and reusable and both PostgreSQL descriptors call the connection dead
    assert _postgres_verdicts(client) == {"reusable": True, "psycopg2": True, "psycopg": True}


def test_a_tls_server_sending_its_fatal_message_then_close_notify_is_dead_to_all(tls_session):
    client, server = tls_session
    # WHEN the server sends its parting FATAL ErrorResponse (encrypted), close_notify, FIN:
    # what a PostgreSQL backend ended on a TLS 1.2 session sends
    server.sendall(FATAL)
    _close_with_notify(server)
    _wait_readable(client)
    # THEN an application data record (0x17) comes first, the alert record after it
    waiting = _waiting(client)
    assert waiting[:1] == b"\x17"
    alert_at = 5 + int.from_bytes(waiting[3:5], "big")
    assert waiting[alert_at : alert_at + 3] == b"\x15\x03\x03"
    assert _postgres_verdicts(client) == {"reusable": True, "psycopg2": True, "psycopg": True}


def test_a_tls_session_sent_a_notification_stays_alive(tls_session):
    client, server = tls_session
    # WHEN the server sends an idle session a NOTIFY (encrypted) and keeps it open
    server.sendall(NOTIFY)
    _wait_readable(client)
    # THEN it is alive to all, and the record is still there for the driver
    assert _postgres_verdicts(client) == {"reusable": False, "psycopg2": False, "psycopg": False}
    assert _waiting(client)[:1] == b"\x17"


@pytest.fixture
def tcp_pair():
    """(ours, theirs): a TCP connection over 127.0.0.1, ours standing for a client's."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=2)
        theirs, _ = listener.accept()
    yield ours, theirs
    ours.close()
    theirs.close()


# What TLS 1.3 shows on the wire of any message, a FATAL or a notification alike: an
# application-data record (its alert hides inside, encrypted too).
TLS13_RECORD = b"\x17\x03\x03\x00\x13" + bytes(19)


@pytest.mark.skipif(not hasattr(select, "POLLRDHUP"), reason="poll has no POLLRDHUP here")
@pytest.mark.parametrize("name", DESCRIBED)
def test_a_server_that_sent_its_fin_after_bytes_nobody_can_read_is_dead(name, tcp_pair):
    # GIVEN an idle connection whose server sent an encrypted record, then closed its side
    ours, theirs = tcp_pair
    theirs.sendall(TLS13_RECORD)
    theirs.shutdown(socket.SHUT_WR)
    _wait_readable(ours)
    # WHEN tracking and reusable look at it: the bytes say nothing, the FIN says it all
    # THEN both find it dead, and no byte was consumed
    assert _tracking_says_dead(_descriptor(name), ours.fileno())
    assert ours.recv(64, socket.MSG_PEEK) == TLS13_RECORD
    assert not is_alive(_connection_over(name, ours))  # (which closes it)


@pytest.mark.parametrize("name", DESCRIBED)
def test_the_same_bytes_without_a_fin_are_judged_by_the_bytes_alone(name, tcp_pair):
    # GIVEN the same record from a server that keeps the connection open
    ours, theirs = tcp_pair
    theirs.sendall(TLS13_RECORD)
    _wait_readable(ours)
    # THEN the bytes alone decide, as before: PostgreSQL and Redis call it alive (a
    # notification looks exactly like this), PyMySQL and urllib3 call any unasked-for byte
    # on an idle connection the server's last
    library = _descriptor(name)
    by_the_bytes = library.closing(TLS13_RECORD)
    assert by_the_bytes == (name in ("pymysql", "urllib3"))
    assert _tracking_says_dead(library, ours.fileno()) == by_the_bytes
    assert (not is_alive(_connection_over(name, ours))) == by_the_bytes
