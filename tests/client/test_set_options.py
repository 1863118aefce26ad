"""``Client.set(..., delay=, unique=)`` against real servers, and against a
server without the options (refused loudly, nothing stored)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from starlingpy.client import UnsupportedFeature
from tests.support import ServerProcess


def test_a_delayed_message_arrives_when_due_and_not_before(client, queue):
    put_at = time.time()
    assert client.set(queue, {"n": 1}, delay=timedelta(milliseconds=400)) is True
    assert client.sizeof(queue) == 0
    assert int(client.stats()[client.servers[0]][f"queue_{queue}_delayed_items"]) == 1
    assert client.get(queue, timeout=20) == {"n": 1}
    assert time.time() >= put_at + 0.4 - 0.01  # never early


def test_a_unique_id_stores_once_until_the_message_is_taken(client, queue):
    assert client.set(queue, "a", unique="grade:7") is True
    assert client.set(queue, "b", unique="grade:7") is False
    with client.reliable(queue) as message:
        assert message.value == "a"
        assert client.set(queue, "c", unique="grade:7") is False  # being processed
    assert client.set(queue, "d", unique="grade:7") is True  # confirmed: free again
    assert client.get(queue) == "d"


def test_unique_sets_from_eight_threads_store_one_message(client, queue):
    results: list[bool] = []
    start = threading.Barrier(8)

    def push(i: int) -> None:
        start.wait()
        results.append(client.set(queue, i, unique="submission:42"))

    threads = [threading.Thread(target=push, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert client.sizeof(queue) == 1


def test_a_unique_id_goes_to_the_same_one_of_several_servers(tmp_path, make_client):
    with ServerProcess(tmp_path / "a") as a, ServerProcess(tmp_path / "b") as b:
        client = make_client([a.address, b.address])
        stored = [client.set("jobs", i, unique="same-id") for i in range(6)]
        assert stored == [True] + [False] * 5
        assert client.sizeof("jobs") == 1


@pytest.mark.parametrize("options", [{"delay": 5}, {"unique": "x"}])
def test_a_server_without_the_options_raises_unsupported_feature(stub, make_client, options):
    plain = make_client([stub.address])
    with pytest.raises(UnsupportedFeature, match="delayed or unique"):
        plain.set("jobs", b"x", **options)
    assert plain.available_queues() == []  # nothing stored, under no odd name
    assert plain.supports_set_options() is False


@pytest.mark.parametrize("options, error", [
    ({"delay": -1}, ValueError), ({"delay": "5"}, TypeError), ({"delay": True}, TypeError),
    ({"unique": ""}, ValueError), ({"unique": "a b"}, ValueError), ({"unique": "x" * 201}, ValueError),
    ({"unique": "é"}, ValueError), ({"delay": 400 * 86400}, ValueError),
])
def test_bad_options_are_refused_before_sending(client, queue, options, error):
    with pytest.raises(error):
        client.set(queue, b"x", **options)
