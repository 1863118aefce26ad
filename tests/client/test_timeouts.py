"""A hung or dead server cannot hang a call beyond its bounds."""

from __future__ import annotations

import socket
import threading

import pytest

from starlingpy.client import ServerUnavailable
from tests.client.helpers import run_in_thread, tcp_stub


def test_server_that_never_answers_times_out(silent_listener, make_client):
    client = make_client([silent_listener], connect_timeout=1.0, timeout=0.3, dead_retry=0,
                         set_retries=1)
    for call, args in [(client.get, ("jobs",)), (client.set, ("jobs", 1)),
                       (client.get, ("jobs",)), (client.stats, ())]:
        status, error = run_in_thread(call, *args)(deadline=30)
        assert status == "error" and isinstance(error, ServerUnavailable), (call, error)


def test_blocking_get_on_a_hung_server_is_bounded(silent_listener, make_client):
    client = make_client([silent_listener], timeout=0.3, dead_retry=0)
    status, error = run_in_thread(client.get, "jobs", timeout=0.5)(deadline=30)
    assert status == "error" and isinstance(error, ServerUnavailable)


def test_set_moves_on_from_a_hung_server(silent_listener, server, make_client, queue):
    client = make_client([silent_listener, server.address], timeout=0.3, dead_retry=60)
    for n in range(4):
        client.set(queue, n)  # the hung one times out once, then is skipped
    assert sorted(client.get(queue) for _ in range(4)) == [0, 1, 2, 3]


@pytest.fixture
def counting_listener():
    """Accepts and closes at once, counting connections (a crashing server)."""
    accepted = []

    def close_at_once(conn):
        accepted.append(conn)
        conn.close()

    with tcp_stub(close_at_once) as address:
        yield address, accepted


def test_dead_server_is_skipped_during_back_off(counting_listener, make_client):
    address, accepted = counting_listener
    client = make_client([address], dead_retry=60)
    with pytest.raises(ServerUnavailable):
        client.set("jobs", 1)
    tried = len(accepted)
    assert tried >= 1
    for _ in range(3):
        with pytest.raises(ServerUnavailable):
            client.set("jobs", 1)
        with pytest.raises(ServerUnavailable):
            client.get("jobs")
    assert len(accepted) == tried  # no connection attempted while in back-off


def test_refused_connection_is_server_unavailable(make_client):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there now
    client = make_client([address])
    with pytest.raises(ServerUnavailable):
        client.set("jobs", 1)


@pytest.fixture
def dropper():
    """Says it is starlingpy, then drops the connection on every get it reads,
    as a server crashing mid-request would; records the gets it saw."""
    gets = []

    def handle(conn):
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                if line.startswith(b"version"):
                    conn.sendall(b"VERSION starlingpy 0.0.0\r\n")
                elif line.startswith(b"get"):
                    gets.append(line)
                    return

    def in_a_thread(conn):
        threading.Thread(target=handle, args=(conn,), daemon=True).start()

    with tcp_stub(in_a_thread) as address:
        yield address, gets


def test_get_is_not_resent_after_the_request_was_sent(dropper, make_client):
    address, gets = dropper
    client = make_client([address], dead_retry=0)
    with pytest.raises(ServerUnavailable):
        client.get("jobs")
    assert gets == [b"get jobs\r\n"]  # once, never retried


def test_a_broken_get_moves_on_to_the_other_servers(dropper, server, make_client, queue):
    address, gets = dropper
    client = make_client([address, server.address], dead_retry=60)
    make_client([server.address]).set(queue, "x")
    values = [client.get(queue) for _ in range(2)]
    assert sorted(values, key=str) == [None, "x"]  # the survivor answered both calls
    assert gets == [b"get %s\r\n" % queue.encode()]  # the dropper: once, then skipped
