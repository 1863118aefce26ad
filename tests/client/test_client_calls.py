"""Every Client call against a real starlingpy server."""

from __future__ import annotations

import os
import pickle

import pytest
from pymemcache.client.base import Client as RawMemcache

from starlingpy.client import (
    FLAG_JSON,
    FLAG_PICKLE,
    FLAG_RAW,
    InvalidQueueName,
    Message,
    NotStored,
    PickleSerializer,
    RawSerializer,
    ServerError,
)
from tests.client.helpers import run_in_thread, wait_for_waiter


def test_set_get_json_round_trip(client, queue):
    client.set(queue, {"submission": 42, "files": ["a.py"]})
    assert client.get(queue) == {"submission": 42, "files": ["a.py"]}
    assert client.get(queue) is None


def test_items_come_back_in_order(client, queue):
    for n in range(5):
        client.set(queue, n)
    assert [client.get(queue) for _ in range(6)] == [0, 1, 2, 3, 4, None]


def test_message_carries_queue_flags_server_and_raw(client, server, queue):
    client.set(queue, [1, "two"])
    message = client.get_first([queue])
    assert message == Message(queue=queue, value=[1, "two"], flags=FLAG_JSON,
                              server=server.address, raw=b'[1,"two"]')


def test_bytes_pass_through_untouched(client, queue):
    client.set(queue, b"\x00\r\nEND\r\n\xff")
    message = client.get_first([queue])
    assert (message.value, message.flags) == (b"\x00\r\nEND\r\n\xff", FLAG_RAW)


def test_pickle_round_trip_only_for_pickle_clients(server, make_client, queue):
    pickler = make_client([server.address], serializer=PickleSerializer())
    pickler.set(queue, {1, 2, 3})
    pickler.set(queue, {4})
    assert pickler.get(queue) == {1, 2, 3}
    plain = make_client([server.address])  # JSON default: never unpickles
    message = plain.get_first([queue])
    assert (message.value, message.flags) == (pickle.dumps({4}), FLAG_PICKLE)


def test_unknown_flags_come_back_as_bytes_with_flags(client, server, queue):
    host, port = server.address.rsplit(":", 1)
    other = RawMemcache((host, int(port)), default_noreply=False)
    try:
        assert other.set(queue, b'{"looks": "like json"}', flags=0x4000)
    finally:
        other.close()
    message = client.get_first([queue])
    assert message.value == message.raw == b'{"looks": "like json"}'
    assert message.flags == 0x4000


def test_raw_serializer_hands_back_bytes(server, make_client, queue):
    raw = make_client([server.address], serializer=RawSerializer())
    make_client([server.address]).set(queue, {"a": 1})
    assert raw.get(queue) == b'{"a":1}'


def test_expired_item_is_never_returned(client, queue):
    client.set(queue, "stale", expiry=-1)
    client.set(queue, "fresh")
    assert client.get(queue) == "fresh"


def test_get_first_takes_in_strict_priority_order(client, queue):
    high, low = queue + "_high", queue + "_low"
    client.set(low, "l1")
    client.set(high, "h1")
    client.set(low, "l2")
    taken = [client.get_first([high, low]) for _ in range(4)]
    assert [(m.queue, m.value) for m in taken[:3]] == [(high, "h1"), (low, "l1"), (low, "l2")]
    assert taken[3] is None


def test_blocking_get_returns_an_item_set_while_it_waits(client, server, make_client, queue):
    waiting = run_in_thread(client.get, queue, timeout=30)
    watcher = make_client([server.address])
    wait_for_waiter(watcher, queue)
    watcher.set(queue, "arrived")
    assert waiting() == ("ok", "arrived")


def test_blocking_get_first_wakes_for_any_queue(client, server, make_client, queue):
    high, low = queue + "_high", queue + "_low"
    waiting = run_in_thread(client.get_first, [high, low], timeout=30)
    watcher = make_client([server.address])
    wait_for_waiter(watcher, low)
    watcher.set(low, "late")
    status, message = waiting()
    assert status == "ok" and (message.queue, message.value) == (low, "late")


def test_blocking_get_times_out_with_none_past_the_read_timeout(server, make_client, queue):
    # The read timeout (0.3 s) is shorter than the wait: the socket timeout must
    # be stretched for the request, or this would fail as a dead server.
    client = make_client([server.address], timeout=0.3)
    assert client.get(queue, timeout=0.6) is None
    assert client.get_first([queue, queue + "_2"], timeout=0.6) is None
    client.set(queue, "still alive")
    assert client.get(queue) == "still alive"


def test_peek_does_not_remove(client, queue):
    assert client.peek(queue) is None
    client.set(queue, "head")
    client.set(queue, "next")
    assert client.peek(queue) == "head"
    assert client.sizeof(queue) == 2
    assert client.get(queue) == "head"


def test_sizeof_and_available_queues(client, queue):
    a, b = queue + "_a", queue + "_b"
    for _ in range(3):
        client.set(a, "x")
    client.set(b, "y")
    assert client.sizeof(a) == 3
    assert client.sizeof(b) == 1
    assert client.sizeof(queue + "_never_used") == 0
    sizes = client.sizeof()
    assert sizes[a] == 3 and sizes[b] == 1
    assert {a, b} <= set(client.available_queues())


def test_delete_drops_the_queue(client, queue):
    client.set(queue, "x")
    client.delete(queue)
    assert queue not in client.available_queues()
    assert client.get(queue) is None
    client.delete(queue + "_never_existed")  # NOT_FOUND is not an error


def test_flush_empties_but_keeps_the_queue(client, queue):
    for n in range(3):
        client.set(queue, n)
    client.flush(queue)
    assert client.sizeof(queue) == 0
    assert client.get(queue) is None
    client.set(queue, "after")
    assert client.get(queue) == "after"


def test_stats_per_server(client, server, queue):
    client.set(queue, "x")
    stats = client.stats()
    assert list(stats) == [server.address]
    assert stats[server.address]["pid"] == str(server.proc.pid)
    assert stats[server.address][f"queue_{queue}_items"] == "1"


def test_full_queue_raises_not_stored(client):
    client.flush("tiny")
    client.set("tiny", 1)
    client.set("tiny", 2)
    with pytest.raises(NotStored):
        client.set("tiny", 3)
    assert [client.get("tiny"), client.get("tiny"), client.get("tiny")] == [1, 2, None]


def test_too_large_item_raises_server_error_and_client_recovers(client, queue):
    with pytest.raises(ServerError, match="too large"):
        client.set(queue, b"x" * 2048)
    client.set(queue, b"small")
    assert client.get(queue) == b"small"


@pytest.mark.parametrize("name", ["a/t=100", "a|b", "", "has space", "x" * 251])
def test_bad_queue_names_fail_before_the_network(client, name):
    with pytest.raises(InvalidQueueName):
        client.set(name, 1)
    with pytest.raises(InvalidQueueName):
        client.get(name)


def test_unicode_queue_names(client):
    client.set("files-é", "ok")
    assert client.get_first(["files-é"]).queue == "files-é"


def test_threads_share_one_client_without_loss_or_duplication(client, queue):
    per_thread, threads = 40, 4

    def produce(offset):
        for n in range(per_thread):
            client.set(queue, offset + n)

    def consume():
        got = []
        while (value := client.get(queue, timeout=1)) is not None:
            got.append(value)
        return got

    producers = [run_in_thread(produce, t * 1000) for t in range(threads)]
    consumers = [run_in_thread(consume) for _ in range(threads)]
    assert all(join() == ("ok", None) for join in producers)
    taken = []
    for join in consumers:
        status, got = join()
        assert status == "ok"
        taken += got
    expected = [t * 1000 + n for t in range(threads) for n in range(per_thread)]
    assert sorted(taken) == expected  # each exactly once


def test_forked_child_opens_its_own_connection(client, server, queue):
    client.set(queue, "parent")  # the parent now holds a pooled connection
    before = int(client.stats()[server.address]["total_connections"])
    pid = os.fork()
    if pid == 0:  # the child: any exception must end in _exit, never in pytest
        code = 3
        try:
            client.set(queue, "child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    after = int(client.stats()[server.address]["total_connections"])
    assert after == before + 1  # the child's own; the parent's is unchanged and still works
    assert [client.get(queue), client.get(queue)] == ["parent", "child"]


def test_expiry_must_be_an_int(client, queue):
    with pytest.raises(TypeError):
        client.set(queue, 1, expiry=1.5)
    assert client.sizeof(queue) == 0
