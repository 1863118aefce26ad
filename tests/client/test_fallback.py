"""Against a plain memcache queue (Ruby Starling 0.10's subset): what the
server lacks is polled for or refused loudly, never silently changed."""

from __future__ import annotations

import pytest

from starlingpy.client import FLAG_RAW, UnsupportedFeature
from tests.client.helpers import run_in_thread
from tests.stubs.plain_memcache_queue import PlainMemcacheQueue
from tests.support import wait_until


@pytest.fixture
def plain(stub, make_client):
    return make_client([stub.address])


def test_set_get_and_flags_lost_like_starling(plain):
    plain.set("jobs", {"a": 1})
    message = plain.get_first(["jobs"])
    # Starling answers flags 0: the JSON comes back as the raw bytes, not a guess.
    assert (message.value, message.flags) == (b'{"a":1}', FLAG_RAW)
    assert plain.get("jobs") is None


def test_json_round_trip_when_the_server_keeps_flags(make_client):
    with PlainMemcacheQueue(keep_flags=True) as keeping:
        client = make_client([keeping.address])
        client.set("jobs", {"a": [1]})
        assert client.get("jobs") == {"a": [1]}


def test_priority_falls_back_to_polling_in_order(plain):
    plain.set("low", b"l")
    plain.set("high", b"h")
    assert plain.get_first(["high", "low"]).queue == "high"
    assert plain.get_first(["high", "low"]).queue == "low"
    assert plain.get_first(["high", "low"]) is None


def test_blocking_get_polls_until_an_item_arrives(plain, stub, make_client):
    waiting = run_in_thread(plain.get, "jobs", timeout=30)
    # Several gets have reached the server: the client is polling, not using /t=.
    wait_until(lambda: stub.get_count >= 3, message="the client polling")
    make_client([stub.address]).set("jobs", b"late")
    assert waiting() == ("ok", b"late")
    assert "jobs/t=" not in str(plain.available_queues())  # no literal "/t=" queue made


def test_blocking_priority_get_polls_and_times_out(plain, stub):
    before = stub.get_count
    assert plain.get_first(["high", "low"], timeout=0.3) is None
    assert stub.get_count - before >= 4  # at least two polls of both queues
    assert plain.available_queues() == []  # nothing like "high|low/t=300" was created


def test_reliable_read_is_refused_and_takes_nothing(plain):
    plain.set("jobs", b"keep me")
    with pytest.raises(UnsupportedFeature, match="reliable"):
        with plain.reliable("jobs"):
            pytest.fail("the block must not run")
    assert plain.sizeof("jobs") == 1
    assert plain.get("jobs") == b"keep me"


def test_peek_and_flush_are_refused(plain):
    plain.set("jobs", b"x")
    with pytest.raises(UnsupportedFeature):
        plain.peek("jobs")
    with pytest.raises(UnsupportedFeature):
        plain.flush("jobs")
    assert plain.sizeof("jobs") == 1


def test_sizeof_available_delete_stats(plain, stub):
    plain.set("a_b", b"1")
    plain.set("a_b", b"2")
    plain.set("c", b"3")
    assert plain.sizeof("a_b") == 2
    assert plain.sizeof() == {"a_b": 2, "c": 1}
    assert plain.available_queues() == ["a_b", "c"]
    plain.delete("c")
    assert plain.available_queues() == ["a_b"]
    assert plain.stats()[stub.address]["version"] == "0.10.1"


def test_capabilities_are_detected_once_per_connection(plain, stub):
    for n in range(5):
        plain.set("jobs", b"%d" % n)
        plain.get("jobs")
    assert stub.version_count == 1


def test_mixed_servers(stub, server, make_client, queue):
    client = make_client([server.address, stub.address])
    make_client([server.address]).set(queue, "ours")
    make_client([stub.address]).set(queue, b"plain")
    # A reliable read refuses even though the starlingpy server could serve it.
    with pytest.raises(UnsupportedFeature):
        with client.reliable(queue):
            pytest.fail("the block must not run")
    assert client.sizeof(queue) == 2
    assert sorted([client.get(queue), client.get(queue)], key=str) == [b"plain", "ours"]
    assert client.get(queue, timeout=0.3) is None
