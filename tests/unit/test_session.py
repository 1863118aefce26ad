"""The session (command in, reply out) against an in-memory store: no
sockets, no files. Every script runs twice: on a store that answers at once,
and on one whose every answer is a Pending (as a store across a network
would give), and the replies must be the same."""

from __future__ import annotations

import pytest
import trio

from starlingpy.counters import ServerCounters
from starlingpy.protocol import Parser
from starlingpy.session import ServerControl, Session
from starlingpy.store import Pending
from starlingpy.store.memory import AnswersLater, MemoryStore


@pytest.fixture(params=["at-once", "later"])
def store(request):
    memory = MemoryStore()
    return memory if request.param == "at-once" else AnswersLater(memory)


def session_on(store, **control) -> Session:
    return Session(store, ServerCounters(), ServerControl(**control))


async def talk(session: Session, wire: bytes) -> bytes:
    """Every reply to the commands in ``wire``, as the shell would send them."""
    parser = Parser()
    parser.feed(wire)
    out = []
    while (command := parser.next_command()) is not None:
        reply = session.execute(command)
        if reply.__class__ is Pending:
            reply = await reply.wait()
        out.append(reply)
        committed = session.store.commit()
        if committed is not None:
            await committed.wait()
    return b"".join(out)


async def test_set_get_and_the_empty_queue(store):
    s = session_on(store)
    assert await talk(s, b"set jobs 5 0 3\r\nabc\r\nget jobs\r\nget jobs\r\n") == (
        b"STORED\r\nVALUE jobs 5 3\r\nabc\r\nEND\r\nEND\r\n")
    assert await talk(s, b"set jobs 0 0 1 noreply\r\nx\r\ngets jobs\r\n") == (
        b"VALUE jobs 0 1 0\r\nx\r\nEND\r\n")
    assert (s.counters.cmd_set, s.counters.cmd_get, s.counters.get_hits) == (2, 3, 2)


async def test_every_command_answers_the_same_whether_the_store_waits_or_not():
    script = (b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\nset b 0 0 1\r\n3\r\n"
              b"get a|b/open\r\nget a|b\r\nget a|b/close/open\r\nget b/peek\r\nget b/abort\r\n"
              b"get b a missing\r\nflush a\r\ndelete b\r\ndelete b\r\nflush_all\r\nversion\r\n")
    replies = []
    for store in (MemoryStore(), AnswersLater(MemoryStore())):
        replies.append(await talk(session_on(store), script))
    assert replies[0] == replies[1]
    assert b"VALUE a|b/open 0 1\r\n1\r\nEND" in replies[0]
    assert b"VALUE a|b/close/open 0 1\r\n2\r\nEND" in replies[0]
    assert replies[0].endswith(b"DELETED\r\nNOT_FOUND\r\nOK\r\nVERSION " + replies[0].split(
        b"VERSION ")[1])


async def test_a_plain_get_is_refused_while_an_item_is_open(store):
    s = session_on(store)
    await talk(s, b"set r 0 0 1\r\na\r\nset r 0 0 1\r\nb\r\nget r/open\r\n")
    reply = await talk(s, b"get r\r\n")
    assert reply.startswith(b"CLIENT_ERROR")
    assert await talk(s, b"get other\r\n") == b"END\r\n"  # other queues are fine
    assert await talk(s, b"get r/close\r\nget r\r\n") == b"END\r\nVALUE r 0 1\r\nb\r\nEND\r\n"


async def test_release_gives_the_open_item_back_to_the_next_session(store):
    first, second = session_on(store), session_on(store)
    await talk(first, b"set r 0 0 1\r\na\r\nget r/open\r\n")
    assert await talk(second, b"get r\r\n") == b"END\r\n"
    released = first.release()
    if released.__class__ is Pending:
        await released.wait()
    assert await talk(second, b"get r\r\n") == b"VALUE r 0 1\r\na\r\nEND\r\n"


async def test_a_waiting_get_is_answered_when_another_session_sets(store):
    reader, writer = session_on(store), session_on(store)
    parser = Parser()
    parser.feed(b"get jobs/t=60000\r\n")
    pending = reader.execute(parser.next_command())
    assert pending.__class__ is Pending
    got = []

    async def wait():
        got.append(await pending.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not store.exists(b"jobs")  # waiting never creates the queue
        await talk(writer, b"set jobs 0 0 2\r\nhi\r\n")
    assert got == [b"VALUE jobs/t=60000 0 2\r\nhi\r\nEND\r\n"]


async def test_a_waiting_get_ends_with_end_at_its_deadline(store, autojump_clock):
    s = session_on(store)
    start = trio.current_time()
    assert await talk(s, b"get q/t=5000\r\n") == b"END\r\n"
    assert trio.current_time() - start == pytest.approx(5)


async def test_stats_shutdown_and_quit(store):
    asked = []
    s = session_on(store, request_shutdown=lambda: asked.append(1))
    await talk(s, b"set q 0 0 2\r\nhi\r\n")
    stats = await talk(s, b"stats\r\n")
    assert b"STAT queue_q_items 1\r\n" in stats and stats.endswith(b"END\r\n")
    assert await talk(s, b"shutdown\r\n") == b"ERROR: shutdown not enabled\r\n"
    assert not asked and not s.quit
    s = session_on(store, enable_shutdown=True, request_shutdown=lambda: asked.append(1))
    assert await talk(s, b"shutdown\r\n") == b"OK\r\n" and asked == [1] and s.quit


async def test_a_store_error_is_the_reply_and_the_session_lives_on():
    from starlingpy.store import StoreError

    class Refusing(MemoryStore):
        def put(self, name, data, flags, exptime):
            raise StoreError(b"SERVER_ERROR out of space")

    s = session_on(Refusing())
    assert await talk(s, b"set q 0 0 1\r\nx\r\nversion\r\n") == (
        b"SERVER_ERROR out of space\r\nVERSION " + (await talk(s, b"version\r\n"))[8:])


async def test_stats_of_many_queues_are_formatted_in_chunks_from_one_snapshot():
    from starlingpy.session import STATS_CHUNK

    store = MemoryStore()
    count = STATS_CHUNK * 3 + 7
    for i in range(count):
        store.put(b"q%05d" % i, b"x" * (i % 5), 0, 0)
    s = session_on(store)
    parser = Parser()
    parser.feed(b"stats\r\n")
    reply = s.execute(parser.next_command())
    assert reply.__class__ is Pending  # other clients are served between chunks
    store.put(b"q00000", b"late", 0, 0)  # after the snapshot: not in this reply
    wire = await reply.wait()
    assert wire.count(b"_waiters ") == count
    assert b"STAT queue_q00000_items 1\r\n" in wire
    assert b"STAT curr_items %d\r\n" % count in wire and wire.endswith(b"\r\nEND\r\n")
