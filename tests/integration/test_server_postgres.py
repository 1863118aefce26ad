"""The server on the PostgreSQL store, in process, on real sockets: the
commands of the protocol, and two servers sharing one database (a waiter on
one woken by a set on the other, through NOTIFY alone)."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from tests.integration.conftest import RawClient
from tests.pgschema import PG_URL, private_schema

pytestmark = pytest.mark.db


@pytest.fixture
def schema():
    with private_schema() as name:
        yield name


async def serve(nursery, schema, identity, **options):
    return await serve_url(nursery, PG_URL, schema, identity, **options)


async def serve_url(nursery, url, schema, identity, **options):
    from starlingpy.store.postgres import PostgresStore
    from starlingpy.tcp import QueueServer

    # (in a thread: opening blocks, and the database may be behind a relay in this process)
    store = await trio.to_thread.run_sync(partial(PostgresStore.open, url, schema=schema,
                                                  identity=identity, **options))
    server = QueueServer(store)

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        try:
            await server.serve("127.0.0.1", 0, task_status=task_status)
        finally:
            store.close()

    _, port = await nursery.start(run)
    return server, port


async def connect(port) -> RawClient:
    return RawClient(await trio.open_tcp_stream("127.0.0.1", port))


async def test_pipelined_commands_in_order(nursery, schema):
    server, port = await serve(nursery, schema, "one")
    client = await connect(port)
    batch = b"".join(b"set q %d 0 2\r\n%02d\r\n" % (i, i) for i in range(20))
    batch += b"get q\r\nget q/open\r\nget q/peek\r\nstats\r\nget q/abort\r\nget q/open\r\nget q/close\r\nget q\r\n"
    await client.send(batch)
    assert await client.read_exactly(len(b"STORED\r\n") * 20) == b"STORED\r\n" * 20
    assert await client.read_until(b"END\r\n") == b"VALUE q 0 2\r\n00\r\nEND\r\n"
    assert await client.read_until(b"END\r\n") == b"VALUE q/open 1 2\r\n01\r\nEND\r\n"
    assert await client.read_until(b"END\r\n") == b"VALUE q/peek 2 2\r\n02\r\nEND\r\n"
    stats = await client.read_until(b"END\r\n")
    assert b"STAT queue_q_items 18\r\n" in stats and b"STAT queue_q_open_transactions 1\r\n" in stats
    assert b"STAT queue_q_total_items 20\r\n" in stats
    assert await client.read_until(b"END\r\n") == b"END\r\n"  # abort: 01 back in its place
    assert await client.read_until(b"END\r\n") == b"VALUE q/open 1 2\r\n01\r\nEND\r\n"
    assert await client.read_until(b"END\r\n") == b"END\r\n"
    assert await client.read_until(b"END\r\n") == b"VALUE q 2 2\r\n02\r\nEND\r\n"
    assert await client.call(b"delete q\r\n") == b"DELETED\r\n"
    assert await client.call(b"get q\r\n", b"END\r\n") == b"END\r\n"
    server.request_shutdown()


async def test_a_closed_connection_releases_its_open_item_to_the_other_server(nursery, schema):
    _, port_a = await serve(nursery, schema, "a")
    _, port_b = await serve(nursery, schema, "b")
    holder = await connect(port_a)
    await holder.call(b"set r 0 0 1\r\nx\r\n")
    assert await holder.call(b"get r/open\r\n", b"END\r\n") == b"VALUE r/open 0 1\r\nx\r\nEND\r\n"
    other = await connect(port_b)
    assert await other.call(b"get r\r\n", b"END\r\n") == b"END\r\n"  # held on server a
    await holder.aclose()
    # a waiter on b hears the release on a
    assert await other.call(b"get r/t=10000\r\n", b"END\r\n") == b"VALUE r/t=10000 0 1\r\nx\r\nEND\r\n"


async def test_a_waiter_on_one_server_wakes_on_a_set_on_another(nursery, schema):
    # Polling only every minute: within the 10 s read deadline only NOTIFY can wake it.
    _, port_a = await serve(nursery, schema, "a", poll_interval=60)
    _, port_b = await serve(nursery, schema, "b", poll_interval=60)
    waiter = await connect(port_b)
    await waiter.send(b"get w/t=30000\r\n")
    watcher = await connect(port_b)
    with trio.fail_after(10):  # the reader is parked on b before the set
        while b"STAT queue_w_waiters 1\r\n" not in await watcher.call(b"stats\r\n", b"END\r\n"):
            await trio.sleep(0.01)
    setter = await connect(port_a)
    assert await setter.call(b"set w 0 0 5\r\nhello\r\n") == b"STORED\r\n"
    assert await waiter.read_until(b"END\r\n") == b"VALUE w/t=30000 0 5\r\nhello\r\nEND\r\n"


async def test_limits_and_expiry(nursery, schema):
    from starlingpy.queue import QueueLimits

    _, port = await serve(nursery, schema, "one", limits_by_name={b"small": QueueLimits(max_items=2)})
    client = await connect(port)
    replies = [await client.call(b"set small 0 0 1\r\n%d\r\n" % i) for i in range(3)]
    assert replies == [b"STORED\r\n", b"STORED\r\n", b"NOT_STORED\r\n"]
    assert await client.call(b"set e 0 -1 1\r\nx\r\n") == b"STORED\r\n"
    assert await client.call(b"get e\r\n", b"END\r\n") == b"END\r\n"
    stats = await client.call(b"stats\r\n", b"END\r\n")
    assert b"STAT queue_e_expired_items 1\r\n" in stats and b"STAT queue_small_items 2\r\n" in stats


class Proxy:
    """A TCP relay to the test database that can be cut and restored on the
    same port: the database unreachable, then back."""

    def __init__(self) -> None:
        self.port = 0
        self._scope: trio.CancelScope | None = None

    async def start(self, nursery) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self._scope = trio.CancelScope()
        nursery.start_soon(self._serve, listeners, self._scope)

    async def _serve(self, listeners, scope) -> None:
        with scope:
            async with trio.open_nursery() as relays:
                await trio.serve_listeners(partial(self._relay, relays), listeners,
                                           handler_nursery=relays)

    async def _relay(self, _, client) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", 5432) as database:
            async with trio.open_nursery() as both:
                both.start_soon(self._copy, client, database, both.cancel_scope)
                await self._copy(database, client, both.cancel_scope)

    @staticmethod
    async def _copy(source, sink, scope) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    def cut(self) -> None:
        self._scope.cancel()


async def test_an_unreachable_database_answers_server_error_and_service_resumes(nursery, schema):
    proxy = Proxy()
    await proxy.start(nursery)
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
    server, port = await serve_url(nursery, url, schema, "proxied")
    client = await connect(port)
    assert await client.call(b"set q 0 0 5\r\nfirst\r\n") == b"STORED\r\n"
    proxy.cut()
    assert await client.call(b"get q\r\n") == b"SERVER_ERROR store unavailable\r\n"
    assert await client.call(b"get q\r\n") == b"SERVER_ERROR store unavailable\r\n"  # lives on
    assert await client.call(b"set q 0 0 4\r\nlost\r\n") == b"SERVER_ERROR store unavailable\r\n"
    await proxy.start(nursery)  # the database is back, on the same address
    client = await connect(port)
    assert await client.call(b"set q 0 0 6\r\nsecond\r\n") == b"STORED\r\n"
    assert await client.call(b"get q\r\n", b"END\r\n") == b"VALUE q 0 5\r\nfirst\r\nEND\r\n"
    assert await client.call(b"get q\r\n", b"END\r\n") == b"VALUE q 0 6\r\nsecond\r\nEND\r\n"
    server.request_shutdown()


async def test_a_url_of_several_hosts_reaches_the_one_that_answers(nursery, schema):
    # libpq tries the hosts in turn; the first refuses connections.
    url = "postgresql://postgres@127.0.0.1:1,127.0.0.1:5432/test?target_session_attrs=read-write"
    server, port = await serve_url(nursery, url, schema, "failover")
    client = await connect(port)
    assert await client.call(b"set f 0 0 2\r\nok\r\n") == b"STORED\r\n"
    assert await client.call(b"get f\r\n", b"END\r\n") == b"VALUE f 0 2\r\nok\r\nEND\r\n"
    server.request_shutdown()
