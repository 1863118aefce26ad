"""The TCP shell over stores other than the journal: one whose every answer
is a Pending (any command may wait) must serve pipelined commands in order,
and release a closed connection's open items."""

from __future__ import annotations

import trio

from starlingpy.store.memory import AnswersLater, MemoryStore
from starlingpy.tcp import QueueServer
from tests.integration.conftest import RawClient


async def serve(nursery, store) -> tuple[QueueServer, int]:
    server = QueueServer(store)
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    return server, port


async def test_pipelined_commands_on_a_store_that_answers_later(nursery):
    store = MemoryStore()
    server, port = await serve(nursery, AnswersLater(store))
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    batch = b"".join(b"set q 0 0 2\r\n%02d\r\n" % i for i in range(20))
    batch += b"get q\r\nget q/open\r\nget q/peek\r\nstats\r\nget q/close\r\nget q\r\n"
    await client.send(batch)
    assert await client.read_exactly(len(b"STORED\r\n") * 20) == b"STORED\r\n" * 20
    assert await client.read_until(b"END\r\n") == b"VALUE q 0 2\r\n00\r\nEND\r\n"
    assert await client.read_until(b"END\r\n") == b"VALUE q/open 0 2\r\n01\r\nEND\r\n"
    assert await client.read_until(b"END\r\n") == b"VALUE q/peek 0 2\r\n02\r\nEND\r\n"
    stats = await client.read_until(b"END\r\n")
    assert b"STAT queue_q_items 18\r\n" in stats and b"STAT queue_q_open_transactions 1\r\n" in stats
    assert await client.read_until(b"END\r\n") == b"END\r\n"
    assert await client.read_until(b"END\r\n") == b"VALUE q 0 2\r\n02\r\nEND\r\n"
    server.request_shutdown()


async def test_a_closed_connection_releases_its_open_item_through_the_store(nursery):
    store = MemoryStore()
    server, port = await serve(nursery, AnswersLater(store))
    holder = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await holder.call(b"set r 0 0 1\r\nx\r\n")
    assert await holder.call(b"get r/open\r\n", b"END\r\n") == b"VALUE r/open 0 1\r\nx\r\nEND\r\n"
    await holder.aclose()
    with trio.fail_after(10):
        while store.statistics()[b"r"].open_transactions:
            await trio.sleep(0.005)
    other = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    assert await other.call(b"get r\r\n", b"END\r\n") == b"VALUE r 0 1\r\nx\r\nEND\r\n"
    server.request_shutdown()
