"""Two and three real servers, one killed mid-test and restarted."""

from __future__ import annotations

import contextlib

import pytest

from starlingpy.client import ServerUnavailable
from tests.client.helpers import run_in_thread, waiters
from tests.support import ServerProcess, wait_until


@pytest.fixture
def cluster(tmp_path):
    """``cluster(n)``: n running servers, killed at the end."""
    with contextlib.ExitStack() as stack:
        def start(count):
            return [stack.enter_context(ServerProcess(tmp_path / f"spool{i}"))
                    for i in range(count)]
        yield start


def items_on(client, address, queue):
    return int(client.stats()[address].get(f"queue_{queue}_items", 0))


def drain(client, queue):
    taken = []
    for _ in range(10_000):  # bounded: far more than any test stores
        value = client.get(queue)
        if value is None:
            return taken
        taken.append(value)
    raise AssertionError("queue never ran dry")


def test_sets_spread_over_servers_and_gets_reach_all(cluster, make_client, queue):
    servers = cluster(2)
    client = make_client([s.address for s in servers])
    for n in range(10):
        client.set(queue, n)
    assert [items_on(client, s.address, queue) for s in servers] == [5, 5]
    assert client.sizeof(queue) == 10
    assert sorted(drain(client, queue)) == list(range(10))


def test_gets_start_at_a_rotating_server(cluster, make_client, queue):
    servers = cluster(2)
    client = make_client([s.address for s in servers])
    for n in range(8):
        client.set(queue, n)
    sources = [client.get_first([queue]).server for _ in range(4)]
    assert set(sources) == {s.address for s in servers}  # neither starves


@pytest.mark.parametrize("count", [2, 3])
def test_one_server_killed_mid_test(cluster, make_client, queue, count):
    servers = cluster(count)
    victim = servers[1]
    client = make_client([s.address for s in servers], dead_retry=0.3)
    for n in range(30):
        client.set(queue, n)
    on_victim = items_on(client, victim.address, queue)
    assert on_victim > 0

    victim.kill()
    for n in range(30, 60):
        client.set(queue, n)  # sets keep succeeding on the survivors

    survivors = drain(client, queue)
    assert len(survivors) == 60 - on_victim
    assert len(set(survivors)) == len(survivors)
    with pytest.raises(ServerUnavailable):
        client.delete(queue + "_other")  # delete must reach all: it says so

    victim.restart()
    # After its back-off the restarted server is tried again and its journal
    # still holds what it STORED before the kill.
    rest = wait_until(lambda: drain(client, queue), timeout=20, message="the victim rejoining")
    rest += drain(client, queue)
    everything = survivors + rest
    assert sorted(everything) == list(range(60))  # nothing lost, nothing twice
    client.set(queue, "after")
    assert client.get(queue) == "after"


def test_blocking_get_across_servers_with_one_dead(cluster, make_client, queue):
    servers = cluster(3)
    client = make_client([s.address for s in servers], dead_retry=30)
    servers[0].kill()
    assert client.get(queue, timeout=0.3) is None  # the dead one is skipped, no error
    client.set(queue, "x")
    assert client.get(queue, timeout=5) == "x"


def test_all_servers_dead_set_raises(cluster, make_client, queue):
    servers = cluster(2)
    client = make_client([s.address for s in servers], dead_retry=30)
    client.set(queue, "stored")
    for s in servers:
        s.kill()
    with pytest.raises(ServerUnavailable):
        client.set(queue, "nowhere")
    with pytest.raises(ServerUnavailable):
        client.get(queue)
    with pytest.raises(ServerUnavailable):
        client.stats()


def test_blocking_priority_get_sees_an_item_on_any_server(cluster, make_client, queue):
    servers = cluster(2)
    high, low = queue + "_high", queue + "_low"
    client = make_client([s.address for s in servers])
    waiting = run_in_thread(client.get_first, [high, low], timeout=30)
    watcher = make_client([s.address for s in servers])
    wait_until(lambda: waiters(watcher, low) >= 1, message="the client waiting")
    for s in servers:  # whichever server it waits on now, the item is elsewhere too
        make_client([s.address]).set(low, s.address)
    status, message = waiting()
    assert status == "ok" and message.queue == low and message.value == message.server


def test_reliable_read_across_servers(cluster, make_client, queue):
    servers = cluster(2)
    client = make_client([s.address for s in servers])
    make_client([servers[1].address]).set(queue, "on the second")
    with pytest.raises(RuntimeError):
        with client.reliable(queue, timeout=5) as message:
            assert message.server == servers[1].address
            raise RuntimeError
    with client.reliable(queue, timeout=5) as message:
        assert message.value == "on the second"
    assert client.sizeof(queue) == 0


def test_large_values_round_trip(cluster, make_client, queue):
    (server,) = cluster(1)
    client = make_client([server.address])
    big = bytes(range(256)) * 4096  # 1 MiB, every byte value
    client.set(queue, big)
    client.set(queue, {"list": list(range(10_000))})
    assert client.get(queue) == big
    assert client.get(queue) == {"list": list(range(10_000))}
