"""Queue-name checks, key building, capability detection, stats parsing."""

import pytest

from starlingpy.client import InvalidQueueName, ServerError
from starlingpy.client.capabilities import detect
from starlingpy.client.keys import build_key, check_queue_name, queue_list
from starlingpy.client.queue_stats import (
    queue_items,
    queue_names,
    queue_sizes,
    read_stats,
)
from starlingpy.client.servers import parse_address
from tests.client.helpers import tcp_stub


@pytest.mark.parametrize("name", ["", "a/b", "a|b", "a+b", "a~b", "a b", "a\tb", "a\x00",
                                  "a\x7f", "x" * 251, "é" * 126, "a\ud800"])
def test_bad_queue_names_are_refused(name):
    with pytest.raises(InvalidQueueName):
        check_queue_name(name)


@pytest.mark.parametrize("name", ["jobs", "a.b-c_d", "é", "x" * 250, "..etc", "%2F",
                                  "a\u2003b"])  # the server's byte rule: only ASCII whitespace
def test_good_queue_names_pass(name):
    assert check_queue_name(name) == name


def test_non_string_names_are_refused():
    with pytest.raises(InvalidQueueName):
        check_queue_name(b"jobs")
    with pytest.raises(InvalidQueueName):
        queue_list([])


def test_build_key():
    assert build_key(["a"]) == b"a"
    assert build_key(["a", "b"], wait=1.5, open_=True) == b"a|b/t=1500/open"
    assert build_key(["a"], wait=0.0001) == b"a/t=1"
    assert build_key(["a"], close=True) == b"a/close"
    assert build_key(["a"], abort=True) == b"a/abort"
    assert build_key(["é"], peek=True) == "é/peek".encode()
    with pytest.raises(InvalidQueueName):
        build_key(["x" * 200, "y" * 60])


def test_capabilities_from_version():
    ours = detect("starlingpy 0.1.0")
    assert ours.extended and ours.flush
    ruby = detect("0.10.1")
    assert not (ruby.blocking_get or ruby.reliable_read or ruby.priority or ruby.peek or ruby.flush)
    assert not detect("1.6.21").extended  # memcached


def _queue_stats(name, items):
    return {f"queue_{name}_{field}": str(value) for field, value in
            [("items", items), ("total_items", items + 1), ("logsize", 9),
             ("expired_items", 0), ("age", 0)]}


def test_queue_names_with_underscores_and_field_like_suffixes():
    stats = {"pid": "1", **_queue_stats("a", 1), **_queue_stats("a_total", 2),
             **_queue_stats("x_items", 3)}
    assert queue_names(stats) == {"a", "a_total", "x_items"}
    assert queue_sizes([stats, _queue_stats("a", 10)]) == {"a": 11, "a_total": 2, "x_items": 3}


def test_parse_address():
    assert parse_address("127.0.0.1:22122") == ("127.0.0.1", 22122)
    assert parse_address("[::1]:5") == ("::1", 5)
    for bad in ["localhost", ":1", "host:", "host:port"]:
        with pytest.raises(ValueError):
            parse_address(bad)


def test_read_stats_from_a_real_server(server, client, queue):
    client.set(queue, "one")
    stats = read_stats(server.address)
    assert stats["pid"] == str(server.proc.pid)
    assert queue_items(stats)[queue] == 1


def _replying(reply: bytes):
    """A stub that answers the first command with ``reply``, then hangs up."""
    def answer(conn):
        with conn:
            conn.recv(1024)
            conn.sendall(reply)
    return answer


def test_read_stats_errors_name_what_went_wrong():
    with tcp_stub(_replying(b"STAT pid 1\r\nSTAT version x 0.1\r\nEND\r\n")) as address:
        assert read_stats(address) == {"pid": "1", "version": "x 0.1"}  # spaces kept
    with tcp_stub(_replying(b"ERROR\r\n")) as address, pytest.raises(ServerError, match="ERROR"):
        read_stats(address)
    with tcp_stub(_replying(b"STAT pid 1\r\n")) as address, \
            pytest.raises(ConnectionError, match="closed"):
        read_stats(address)
    with pytest.raises(ValueError):
        read_stats("no-port-here")
