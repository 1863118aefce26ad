"""Blocking gets, reliable reads and priority alternatives over loopback."""

from __future__ import annotations

import trio

from tests.integration.test_server_commands import stat_value


async def wait_for_stat(client, name: str, expected: str) -> None:
    with trio.fail_after(10):
        while stat_value(await client.call(b"stats\r\n", b"END\r\n"), name) != expected:
            await trio.sleep(0.005)


async def wait_for_waiters(running, name: bytes, expected: int) -> None:
    with trio.fail_after(10):
        while running.collection.waiting(name) != expected:
            await trio.sleep(0.005)


async def test_blocking_get_is_woken_by_a_set_from_another_connection(running, client):
    producer = await running.connect()
    await client.send(b"get jobs/t=10000\r\n")
    await wait_for_waiters(running, b"jobs", 1)
    # waiting never creates a queue (nor its file)
    stats = await producer.call(b"stats\r\n", b"END\r\n")
    assert stat_value(stats, "queue_jobs_waiters") == "1"
    assert stat_value(stats, "queue_jobs_items") == stat_value(stats, "queue_jobs_logsize") == "0"
    assert not running.collection.exists(b"jobs")
    assert sorted(p.name for p in running.directory.iterdir()) == [".starlingpy.lock"]
    assert await producer.call(b"set jobs 0 0 3\r\nnew\r\n") == b"STORED\r\n"
    assert await client.read_until(b"END\r\n", timeout=5) == b"VALUE jobs/t=10000 0 3\r\nnew\r\nEND\r\n"


async def test_blocking_get_times_out_with_end(client):
    start = trio.current_time()
    assert await client.call(b"get empty/t=200\r\n", b"END\r\n") == b"END\r\n"
    assert trio.current_time() - start >= 0.19


async def test_open_then_disconnect_puts_the_item_back_at_the_head(running, client):
    await client.call(b"set r 0 0 5\r\nfirst\r\n")
    await client.call(b"set r 0 0 6\r\nsecond\r\n")
    assert await client.call(b"get r/open\r\n", b"END\r\n") == b"VALUE r/open 0 5\r\nfirst\r\nEND\r\n"
    other = await running.connect()
    assert stat_value(await other.call(b"stats\r\n", b"END\r\n"), "queue_r_open_transactions") == "1"
    await client.aclose()
    await wait_for_stat(other, "queue_r_open_transactions", "0")
    assert await other.call(b"get r\r\n", b"END\r\n") == b"VALUE r 0 5\r\nfirst\r\nEND\r\n"


async def test_close_confirms_and_close_open_takes_the_next(running, client):
    for word in (b"a", b"b", b"c"):
        await client.call(b"set r 0 0 1\r\n" + word + b"\r\n")
    assert await client.call(b"get r/open\r\n", b"END\r\n") == b"VALUE r/open 0 1\r\na\r\nEND\r\n"
    assert await client.call(b"get r/close/open\r\n", b"END\r\n") == \
        b"VALUE r/close/open 0 1\r\nb\r\nEND\r\n"
    assert await client.call(b"get r/close\r\n", b"END\r\n") == b"END\r\n"
    await client.aclose()
    other = await running.connect()
    assert await other.call(b"get r\r\n", b"END\r\n") == b"VALUE r 0 1\r\nc\r\nEND\r\n"


async def test_abort_puts_the_item_back(client):
    await client.call(b"set r 0 0 1\r\na\r\n")
    await client.call(b"set r 0 0 1\r\nb\r\n")
    await client.call(b"get r/open\r\n", b"END\r\n")
    assert await client.call(b"get r/abort\r\n", b"END\r\n") == b"END\r\n"
    assert await client.call(b"get r\r\n", b"END\r\n") == b"VALUE r 0 1\r\na\r\nEND\r\n"


async def test_plain_get_while_holding_an_open_item_is_refused(client):
    await client.call(b"set r 0 0 1\r\na\r\n")
    await client.call(b"set r 0 0 1\r\nb\r\n")
    await client.call(b"get r/open\r\n", b"END\r\n")
    assert (await client.call(b"get r\r\n")).startswith(b"CLIENT_ERROR")
    assert (await client.call(b"get r/open\r\n")).startswith(b"CLIENT_ERROR")
    assert await client.call(b"get r/peek\r\n", b"END\r\n") == b"VALUE r/peek 0 1\r\nb\r\nEND\r\n"


async def test_bad_option_combinations_are_refused(client):
    for key in (b"q/peek/open", b"q/abort/close", b"q/open/abort", b"q/bogus"):
        assert await client.call(b"get " + key + b"\r\n") == b"CLIENT_ERROR bad command line format\r\n"


async def test_priority_alternatives_take_from_the_earliest_listed_queue(client):
    await client.call(b"set low 0 0 1\r\nL\r\n")
    await client.call(b"set high 0 0 1\r\nH\r\n")
    assert await client.call(b"get high|low\r\n", b"END\r\n") == b"VALUE high|low 0 1\r\nH\r\nEND\r\n"
    assert await client.call(b"get high|low\r\n", b"END\r\n") == b"VALUE high|low 0 1\r\nL\r\nEND\r\n"
    assert await client.call(b"get high|low\r\n", b"END\r\n") == b"END\r\n"


async def test_priority_wait_is_woken_by_any_listed_queue(running, client):
    producer = await running.connect()
    await client.send(b"get pulls|pushes/t=10000/open\r\n")
    await wait_for_waiters(running, b"pushes", 1)
    assert running.collection.waiting(b"pulls") == 1
    await producer.call(b"set pushes 0 0 4\r\npush\r\n")
    assert await client.read_until(b"END\r\n") == b"VALUE pulls|pushes/t=10000/open 0 4\r\npush\r\nEND\r\n"
    # the open item belongs to `pushes`; close with the same compound key
    assert await client.call(b"get pulls|pushes/close\r\n", b"END\r\n") == b"END\r\n"
    stats = await producer.call(b"stats\r\n", b"END\r\n")
    assert stat_value(stats, "queue_pushes_open_transactions") == "0"
    assert stat_value(stats, "queue_pushes_items") == "0"


async def test_open_item_from_priority_get_aborts_back_to_its_own_queue(running, client):
    await client.call(b"set b 0 0 1\r\nx\r\n")
    assert await client.call(b"get a|b/open\r\n", b"END\r\n") == b"VALUE a|b/open 0 1\r\nx\r\nEND\r\n"
    await client.call(b"get a|b/abort\r\n", b"END\r\n")
    assert await client.call(b"get b\r\n", b"END\r\n") == b"VALUE b 0 1\r\nx\r\nEND\r\n"


async def test_many_waiters_each_get_one_item(running):
    clients = [await running.connect() for _ in range(10)]
    for c in clients:
        await c.send(b"get w/t=10000\r\n")
    producer = await running.connect()
    await wait_for_waiters(running, b"w", 10)
    for i in range(10):
        await producer.call(b"set w 0 0 2\r\n%02d\r\n" % i)
    got = sorted([await c.read_until(b"END\r\n") for c in clients])
    assert got == sorted(b"VALUE w/t=10000 0 2\r\n%02d\r\nEND\r\n" % i for i in range(10))
