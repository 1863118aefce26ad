"""What every store must do (docs/storage.md), judged the same way for each
store: order, expiry, open items, release, priority alternatives, waiting,
limits, statistics, and, for durable stores, what survives a restart."""

from __future__ import annotations

import pytest
import trio

from tests.store.conftest import answer, limits, settle
from tests.unit.conftest import T0


async def put(store, name, data, flags=0, exptime=0):
    return await answer(store.put(name, data, flags, exptime))


async def take_all(store, names):
    out = []
    while (item := await answer(store.take(names))) is not None:
        out.append(item.data)
    return out


async def durable(store):
    await answer(store.commit())


async def test_fifo_order_and_flags(kind):
    store = kind.make()
    for i in range(5):
        assert await put(store, b"q", b"item%d" % i, flags=i) is True
    item = await answer(store.take([b"q"]))
    assert (item.data, item.flags) == (b"item0", 0)
    assert await take_all(store, [b"q"]) == [b"item1", b"item2", b"item3", b"item4"]
    assert await answer(store.take([b"q"])) is None
    assert await answer(store.take([b"never-made"])) is None


async def test_peek_leaves_the_item(kind):
    store = kind.make()
    await put(store, b"q", b"a")
    assert (await answer(store.peek([b"q"]))).data == b"a"
    assert (await answer(store.peek([b"q"]))).data == b"a"
    assert (await answer(store.take([b"q"]))).data == b"a"
    assert await answer(store.peek([b"q"])) is None


async def test_expiry_relative_absolute_and_negative(kind):
    store = kind.make()
    clock = kind.clock
    await put(store, b"e", b"soon", exptime=10)
    await put(store, b"e", b"at", exptime=int(T0) + 20)
    await put(store, b"e", b"never")
    assert await put(store, b"e", b"already", exptime=-1) is True  # counted, not kept
    clock.now = T0 + 10
    assert await take_all(store, [b"e"]) == [b"at", b"never"]
    stats = (await answer(store.statistics()))[b"e"]
    assert stats.expired_items == 2 and stats.total_items == 4


async def test_priority_alternatives_take_the_first_listed_with_an_item(kind):
    store = kind.make()
    await put(store, b"low", b"l1")
    await put(store, b"high", b"h1")
    await put(store, b"low", b"l2")
    names = [b"high", b"low"]
    assert await take_all(store, names) == [b"h1", b"l1", b"l2"]


async def test_open_close_abort(kind):
    store = kind.make()
    for word in (b"a", b"b", b"c"):
        await put(store, b"r", word)
    assert (await answer(store.open_item([b"r"], 1))).data == b"a"
    assert store.holds_open(1) and store.holds_open(1, [b"r"]) and not store.holds_open(2)
    assert (await answer(store.open_item([b"r"], 2))).data == b"b"
    assert await answer(store.close_item([b"r"], 1)) is True
    assert await answer(store.close_item([b"r"], 1)) is False
    assert not store.holds_open(1)
    assert await answer(store.abort_item([b"r"], 2)) is True  # b back at the head
    assert await take_all(store, [b"r"]) == [b"b", b"c"]


async def test_an_open_item_of_a_priority_get_belongs_to_its_own_queue(kind):
    store = kind.make()
    await put(store, b"b", b"x")
    assert (await answer(store.open_item([b"a", b"b"], 7))).data == b"x"
    assert store.holds_open(7, [b"b"]) and not store.holds_open(7, [b"a"])
    assert await answer(store.abort_item([b"a", b"b"], 7)) is True
    assert await take_all(store, [b"a"]) == []
    assert await take_all(store, [b"b"]) == [b"x"]


async def test_release_puts_every_open_item_of_an_owner_back_at_the_head(kind):
    store = kind.make()
    for name in (b"x", b"y"):
        await put(store, name, name + b"1")
        await put(store, name, name + b"2")
        assert (await answer(store.open_item([name], 5))).data == name + b"1"
    stats = await answer(store.statistics())
    assert stats[b"x"].open_transactions == 1 and stats[b"x"].items == 1
    await answer(store.release(5))
    assert not store.holds_open(5)
    assert await take_all(store, [b"x"]) == [b"x1", b"x2"]
    assert await take_all(store, [b"y"]) == [b"y1", b"y2"]
    await answer(store.release(5))  # nothing held: nothing happens


async def test_waiting_is_woken_by_a_put_and_never_creates_a_queue(kind):
    store = kind.make()
    woken = []

    async def reader():
        await store.wait_for_item([b"a", b"b"], trio.current_time() + 60)
        woken.append(await answer(store.take([b"a", b"b"])))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await settle()
        assert not store.exists(b"a") and not store.exists(b"b")
        stats = await answer(store.statistics())  # who waits for what shows, as empty
        assert stats[b"a"].waiters == 1 and stats[b"a"].items == stats[b"a"].logsize == 0
        await put(store, b"b", b"hello")
    assert [item.data for item in woken] == [b"hello"]


async def test_waiting_ends_at_the_deadline(kind, autojump_clock):
    store = kind.make()
    start = trio.current_time()
    await store.wait_for_item([b"q"], start + 5)
    assert trio.current_time() == pytest.approx(start + 5)
    assert not store.exists(b"q")


async def test_each_item_wakes_one_waiter(kind):
    store = kind.make()
    got = []

    async def reader():
        item = None
        with trio.fail_after(30):
            while item is None:
                await store.wait_for_item([b"w"], trio.current_time() + 60)
                item = await answer(store.take([b"w"]))
                await durable(store)  # as the shell does before replying
        got.append(item.data)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(reader)
        await settle()
        for i in range(5):
            await put(store, b"w", b"%d" % i)
            await durable(store)
    assert sorted(got) == [b"0", b"1", b"2", b"3", b"4"]


async def test_limits_refuse_or_discard(kind):
    store = kind.make(**limits(max_items=2))
    assert await put(store, b"q", b"1") and await put(store, b"q", b"2")
    assert await put(store, b"q", b"3") is False
    assert await take_all(store, [b"q"]) == [b"1", b"2"]


async def test_discard_old_drops_the_oldest(kind):
    store = kind.make(**limits(max_items=2, discard_old=True))
    for word in (b"1", b"2", b"3"):
        assert await put(store, b"q", word) is True
    assert await take_all(store, [b"q"]) == [b"2", b"3"]


async def test_statistics_are_consistent(kind):
    store = kind.make()
    kind.clock.now = T0
    await put(store, b"s", b"abc")
    await put(store, b"s", b"de")
    await put(store, b"s", b"f")
    kind.clock.now = T0 + 1.5
    await answer(store.take([b"s"]))
    await answer(store.open_item([b"s"], 3))
    await durable(store)
    stats = (await answer(store.statistics()))[b"s"]
    assert (stats.items, stats.total_items, stats.bytes, stats.open_transactions) == (1, 3, 1, 1)
    assert stats.age_ms == 1500 and stats.waiters == 0
    assert stats.logsize >= 0


async def test_delete_flush_and_flush_all(kind):
    store = kind.make()
    for name in (b"a", b"b", b"c"):
        await put(store, name, b"x")
    assert await answer(store.delete(b"a")) is True
    assert await answer(store.delete(b"a")) is False
    assert not store.exists(b"a")
    await answer(store.flush(b"b"))
    assert store.exists(b"b") and await take_all(store, [b"b"]) == []
    await answer(store.flush_all())
    assert await take_all(store, [b"c"]) == []
    assert sorted(await answer(store.statistics())) == [b"b", b"c"]


async def test_delete_forgets_open_items_held_on_the_queue(kind):
    store = kind.make()
    await put(store, b"d", b"x")
    await answer(store.open_item([b"d"], 9))
    assert await answer(store.delete(b"d")) is True
    assert not store.holds_open(9, [b"d"])
    await put(store, b"d", b"new")
    assert (await answer(store.open_item([b"d"], 9))).data == b"new"


async def test_what_was_committed_survives_a_restart(kind):
    if kind.reopen is None:
        pytest.skip(f"the {kind.name} store keeps nothing across a restart")
    store = kind.make()
    for word in (b"a", b"b", b"c", b"d"):
        await put(store, b"q", word)
    await answer(store.take([b"q"]))
    assert (await answer(store.open_item([b"q"], 1))).data == b"b"
    await durable(store)
    store.abandon()  # a crash: nothing more is written
    store = kind.reopen()
    # the taken item is gone, the open one is back at the head
    assert await take_all(store, [b"q"]) == [b"b", b"c", b"d"]


# -- delayed and unique items (PROTOCOL.md "Delayed items", "Unique items") --

@pytest.fixture
def held(kind):
    """For the tests of delayed and unique items: skipped for a store without them."""
    if not kind.held_items:
        pytest.skip(f"the {kind.name} store has no delayed or unique items yet")
    return kind


async def put_with(store, name, data, **options):
    return await answer(store.put(name, data, 0, 0, **options))


async def test_a_delayed_item_is_unseen_until_due_then_keeps_its_arrival_place(kind, held):
    store = kind.make()
    clock = kind.clock
    assert await put_with(store, b"q", b"later", delay_ms=5000) is True
    clock.now += 1
    await put(store, b"q", b"plain")
    stats = (await answer(store.statistics()))[b"q"]
    assert (stats.items, stats.delayed_items) == (1, 1)
    assert await answer(store.peek([b"q"])) == await answer(store.peek([b"q"]))
    assert (await answer(store.peek([b"q"]))).data == b"plain"
    clock.now += 4  # due now: it arrived before "plain", so it comes first
    stats = (await answer(store.statistics()))[b"q"]
    assert (stats.items, stats.delayed_items) == (2, 0)
    assert await take_all(store, [b"q"]) == [b"later", b"plain"]


async def test_a_delayed_item_put_back_by_abort_or_release_is_due_at_once(kind, held):
    store = kind.make()
    await put_with(store, b"q", b"d", delay_ms=1000)
    kind.clock.now += 1
    assert (await answer(store.open_item([b"q"], 1))).data == b"d"
    assert await answer(store.abort_item([b"q"], 1)) is True
    assert (await answer(store.open_item([b"q"], 2))).data == b"d"
    await answer(store.release(2))
    assert await take_all(store, [b"q"]) == [b"d"]


async def test_delayed_items_expire_and_are_counted(kind, held):
    store = kind.make()
    assert await put(store, b"q", b"x") is True
    assert await answer(store.put(b"q", b"gone", 0, 3, delay_ms=5000)) is True  # expires first
    assert await answer(store.put(b"q", b"dies", 0, 8, delay_ms=5000)) is True
    kind.clock.now += 9
    assert await take_all(store, [b"q"]) == [b"x"]
    stats = (await answer(store.statistics()))[b"q"]
    assert (stats.expired_items, stats.total_items, stats.delayed_items) == (2, 3, 0)


async def test_a_reader_waiting_wakes_when_a_delayed_item_falls_due(kind, held, autojump_clock):
    store = kind.make()
    got = []

    async def reader():
        deadline = trio.current_time() + 600
        while trio.current_time() < deadline and not got:
            await store.wait_for_item([b"q"], deadline)
            if (item := await answer(store.take([b"q"]))) is not None:
                got.append(item.data)

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_background)
        nursery.start_soon(reader)
        await settle()
        await put_with(store, b"q", b"soon", delay_ms=30_000)
        await settle()
        assert not got  # not due: the reader still waits
        started = trio.current_time()
        kind.clock.now += 30  # the store's clock passes the due time
        with trio.fail_after(5):
            while not got:
                await trio.sleep(0.1)
        assert trio.current_time() - started < 5
        nursery.cancel_scope.cancel()
    assert got == [b"soon"]


async def test_a_unique_id_is_refused_while_its_item_waits_is_delayed_or_open(kind, held):
    store = kind.make()
    assert await put_with(store, b"q", b"first", unique=b"job:1") is True
    assert await put_with(store, b"q", b"again", unique=b"job:1") is False
    assert await put_with(store, b"other", b"elsewhere", unique=b"job:1") is True  # per queue
    assert (await answer(store.open_item([b"q"], 7))).data == b"first"
    assert await put_with(store, b"q", b"while open", unique=b"job:1") is False
    assert await answer(store.abort_item([b"q"], 7)) is True  # back: still held
    assert await put_with(store, b"q", b"after abort", unique=b"job:1") is False
    assert (await answer(store.open_item([b"q"], 7))).data == b"first"
    assert await answer(store.close_item([b"q"], 7)) is True  # confirmed: the id is free
    assert await put_with(store, b"q", b"delayed", unique=b"job:1", delay_ms=1000) is True
    assert await put_with(store, b"q", b"refused", unique=b"job:1") is False
    kind.clock.now += 1
    assert await take_all(store, [b"q"]) == [b"delayed"]  # taken: free again
    assert await put_with(store, b"q", b"last", unique=b"job:1") is True
    await answer(store.flush(b"q"))  # flushed: free again
    assert await put_with(store, b"q", b"after flush", unique=b"job:1") is True
    stats = (await answer(store.statistics()))[b"q"]
    assert (stats.items, stats.open_transactions) == (1, 0)


async def test_unique_and_plain_items_keep_arrival_order(kind, held):
    store = kind.make()
    for i in range(6):
        kind.clock.now += 1
        if i % 2:
            await put_with(store, b"q", b"%d" % i, unique=b"u%d" % i)
        else:
            await put(store, b"q", b"%d" % i)
    assert await take_all(store, [b"q"]) == [b"0", b"1", b"2", b"3", b"4", b"5"]


async def test_delays_and_unique_ids_survive_a_restart_and_a_rewrite(kind, held):
    if kind.reopen is None:
        pytest.skip(f"the {kind.name} store keeps nothing across a restart")
    store = kind.make()
    clock = kind.clock
    await put_with(store, b"q", b"in 10s", delay_ms=10_000, unique=b"r:1")
    clock.now += 1
    await put(store, b"q", b"plain")
    await put_with(store, b"q", b"open one", unique=b"r:2")
    await put_with(store, b"q", b"in 20s", delay_ms=20_000)
    assert (await answer(store.take([b"q"]))).data == b"plain"
    assert (await answer(store.open_item([b"q"], 1))).data == b"open one"
    await durable(store)
    store.abandon()  # a crash
    store = kind.reopen()
    assert await put_with(store, b"q", b"dup", unique=b"r:1") is False
    assert await put_with(store, b"q", b"dup", unique=b"r:2") is False  # was open: back
    assert (await answer(store.statistics()))[b"q"].delayed_items == 2
    assert store.compact(b"q") is True
    await durable(store)
    store.abandon()
    store = kind.reopen()
    assert await take_all(store, [b"q"]) == [b"open one"]
    clock.now += 10
    assert await take_all(store, [b"q"]) == [b"in 10s"]
    assert await put_with(store, b"q", b"free", unique=b"r:1") is True
    clock.now += 10
    assert await take_all(store, [b"q"]) == [b"in 20s", b"free"]
