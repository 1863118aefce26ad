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
