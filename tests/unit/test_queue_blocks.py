"""Compact storage of waiting items (recent tuples sealed into blocks,
blocks thawed at the front) and waking one parked reader per item, with
unused wakes passed on. Real files in tmp_path, an injected clock."""

from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from starlingpy import blocks as blocks_module
from starlingpy import queue as queue_module
from starlingpy.blocks import ItemRun
from starlingpy.journal import snapshot as snapshot_module
from tests.unit.conftest import T0, open_c


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(queue_module, "SEAL_ITEMS", 8)
    monkeypatch.setattr(blocks_module, "RUN_BYTES", 40)


@pytest.fixture
def collection(tmp_path, clock):
    c = open_c(tmp_path / "q", clock=clock)
    yield c
    c.close()


def reopen(c, tmp_path, clock, crash=False):
    c.commit()
    c.abandon() if crash else c.close()
    return open_c(tmp_path / "q", clock=clock)


def taken(q):
    out = []
    while (item := q.take_nowait()) is not None:
        out.append((item.data, item.flags, item.expiry, q.statistics().age_ms))
    return out


# -- sealing and thawing -------------------------------------------------------

def test_recent_items_are_sealed_into_blocks_of_bounded_size(collection, small_blocks):
    q = collection.get_or_create(b"s")
    for i in range(7):
        q.put(b"%02d-" % i + b"x" * 8, i, 0)
    assert len(q._recent) == 7 and not q._blocks
    q.put(b"big" * 30, 7, 0)  # 90 bytes: more than a block holds, so a block of its own
    assert not q._recent
    blocks = list(q._blocks)
    assert all(type(b) is ItemRun for b in blocks)
    assert [len(b) for b in blocks] == [3, 3, 1, 1]
    assert all(len(b.data) <= 40 for b in blocks[:3]) and blocks[3].data == b"big" * 30
    assert q.statistics().items == 8 and q.statistics().bytes == 7 * 11 + 90


def test_sealed_items_keep_data_flags_expiry_and_enqueue_time(collection, clock, small_blocks):
    q = collection.get_or_create(b"s")
    expected = []
    for i in range(20):
        clock.now = T0 + i
        exptime = 1000 + i if i % 3 == 0 else 0
        q.put(b"item%d" % i, i * 7, exptime)
        expected.append((b"item%d" % i, i * 7, T0 + i + exptime if exptime else 0.0, i))
    assert q._blocks  # some were sealed
    clock.now = T0 + 100
    got = taken(q)
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[3] for g in got] == [(100 - e[3]) * 1000 for e in expected]


def test_expired_items_inside_blocks_are_dropped_and_counted(collection, clock, small_blocks):
    q = collection.get_or_create(b"s")
    for i in range(12):
        q.put(b"i%d" % i, 0, 5 if i % 2 else 0)  # odd ones expire after 5 s
    clock.now = T0 + 10
    assert q.peek_nowait().data == b"i0"
    assert [d for d, *_ in taken(q)] == [b"i%d" % i for i in range(0, 12, 2)]
    stats = q.statistics()
    assert (stats.items, stats.expired_items, stats.bytes) == (0, 6, 0)


def test_peek_open_and_abort_across_block_boundaries(collection, small_blocks):
    q = collection.get_or_create(b"s")
    for i in range(10):
        q.put(b"i%d" % i, i, 0)
    owner = object()
    assert q.peek_nowait().data == b"i0"
    assert q.open_nowait(owner).data == b"i0"
    assert q.take_nowait().data == b"i1"
    assert q.abort_open(owner)  # back at the head, before the thawed items
    assert [(d, f) for d, f, *_ in taken(q)] == [(b"i0", 0)] + [(b"i%d" % i, i)
                                                             for i in range(2, 10)]


@pytest.mark.parametrize("crash", [False, True])
def test_blocks_survive_rewrite_and_restart_in_order(collection, tmp_path, clock, small_blocks,
                                                     crash):
    q = collection.get_or_create(b"s")
    for i in range(30):
        clock.now = T0 + i * 0.5  # spread: the rewrite splits frames by enqueue time
        q.put(b"i%d" % i, i, 0)
    q.take_nowait()
    collection.commit()
    assert collection.compact(b"s")
    q.put(b"last", 99, 0)
    c = reopen(collection, tmp_path, clock, crash)
    try:
        clock.now = T0 + 100
        got = taken(c.get(b"s"))
        assert [(d, f) for d, f, *_ in got] == [(b"i%d" % i, i) for i in range(1, 30)] + [
            (b"last", 99)]
        assert got[0][3] == pytest.approx((100 - 0.5) * 1000, abs=1000)
    finally:
        c.close()


@pytest.mark.parametrize("tiny_runs", [False, True])
def test_replayed_blocks_thaw_with_each_frames_enqueue_time(tmp_path, clock, monkeypatch,
                                                            tiny_runs):
    if tiny_runs:  # blocks then split frames, and frames span blocks
        from starlingpy.journal import replay
        monkeypatch.setattr(replay, "RUN_ITEMS", 2)
    c = open_c(tmp_path / "q", clock=clock)
    q = c.get_or_create(b"s")
    for batch, at in ((3, 0), (1, 10), (4, 50)):
        clock.now = T0 + at
        for i in range(batch):
            q.put(b"%d-%d" % (at, i), at + i, 0)
        c.commit()  # one frame per batch: its items share the frame's time
    c = reopen(c, tmp_path, clock, crash=True)
    clock.now = T0 + 100
    got = taken(c.get(b"s"))
    assert [(d, f) for d, f, *_ in got] == [(b"%d-%d" % (at, i), at + i)
                                            for batch, at in ((3, 0), (1, 10), (4, 50))
                                            for i in range(batch)]
    assert [age for *_, age in got] == [100_000] * 3 + [90_000] + [50_000] * 4
    c.close()


@pytest.mark.parametrize("flags", [-1, 1 << 32])
def test_flags_outside_32_bits_are_refused_before_anything_changes(collection, flags):
    q = collection.get_or_create(b"s")
    with pytest.raises(ValueError):
        q.put(b"x", flags, 0)
    collection.commit()
    assert q.statistics().items == 0 and q.take_nowait() is None


def test_a_rewrite_keeps_frames_under_the_data_limit(collection, tmp_path, clock, monkeypatch):
    monkeypatch.setattr(snapshot_module, "MAX_FRAME_DATA", 25)
    q = collection.get_or_create(b"s")
    sizes = [10, 10, 10, 40, 3, 30]  # 40 and 30: each larger than a frame may hold
    for i, size in enumerate(sizes):
        q.put(bytes([65 + i]) * size, i, 0)
    collection.compact(b"s")
    frames = dump_frames(collection.directory / "s.spq")
    assert [len(f.split()) for f in frames] == [2, 1, 1, 1, 1]
    c = reopen(collection, tmp_path, clock, crash=True)
    try:
        assert [(d, f) for d, f, *_ in taken(c.get(b"s"))] == [
            (bytes([65 + i]) * size, i) for i, size in enumerate(sizes)]
    finally:
        c.close()


def dump_frames(path):
    from starlingpy.journal.codec import decode_file_header
    from starlingpy.journal.replay import dump
    buf = path.read_bytes()
    return dump(buf, decode_file_header(buf)[1]).split(" | ")


def test_flush_and_delete_drop_blocks_too(collection, small_blocks):
    q = collection.get_or_create(b"s")
    for i in range(20):
        q.put(b"i%d" % i, 0, 0)
    q.flush()
    assert q.take_nowait() is None and q.statistics().bytes == 0
    for i in range(20):
        q.put(b"i%d" % i, 0, 0)
    assert collection.delete(b"s")
    assert collection.get_or_create(b"s").take_nowait() is None


# -- one wake per item, passed on when unused ----------------------------------

async def park(c, queues, woken, name):
    await c.wait_for_item([q.name for q in queues], trio.current_time() + 3600)
    woken.append(name)


@asynccontextmanager
async def nursery():
    """A nursery with a deadline: a lost wake-up fails the test, not hangs it."""
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            yield n


async def test_a_put_wakes_one_parked_reader_per_item(collection):
    q = collection.get_or_create(b"w")
    woken = []
    async with nursery() as tasks:
        for name in "abc":
            tasks.start_soon(park, collection, [q], woken, name)
            await trio.testing.wait_all_tasks_blocked()
        q.put(b"one", 0, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["a"]  # the longest parked
        assert q.statistics().waiters == 2
        q.put(b"two", 0, 0)
        q.put(b"three", 0, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(woken) == ["a", "b", "c"]


async def test_an_unused_wake_is_passed_on_by_write_pending(collection):
    x, y = collection.get_or_create(b"x"), collection.get_or_create(b"y")
    woken = []
    async with nursery() as tasks:
        tasks.start_soon(park, collection, [x, y], woken, "both")
        await trio.testing.wait_all_tasks_blocked()
        tasks.start_soon(park, collection, [y], woken, "y-only")
        await trio.testing.wait_all_tasks_blocked()
        y.put(b"for-y", 0, 0)  # wakes "both", the longest parked
        x.put(b"for-x", 0, 0)  # "both" is woken already: nobody else parks on x
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["both"] and y.statistics().waiters == 1
        assert x.take_nowait().data == b"for-x"  # "both" takes from x, not y
        collection.commit()  # as the connection does before replying
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["both", "y-only"]


async def test_a_wake_lost_to_cancellation_is_passed_on(collection):
    q = collection.get_or_create(b"w")
    woken = []
    first = trio.CancelScope()

    async def cancelled_after_waking():
        with first:
            await collection.wait_for_item([q.name], trio.current_time() + 3600)
            await trio.sleep_forever()  # cancelled here, having taken nothing

    async with nursery() as tasks:
        tasks.start_soon(cancelled_after_waking)
        await trio.testing.wait_all_tasks_blocked()
        tasks.start_soon(park, collection, [q], woken, "second")
        await trio.testing.wait_all_tasks_blocked()
        q.put(b"x", 0, 0)  # wakes the first...
        first.cancel()  # ...which is cancelled before it takes
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [] and q.statistics().waiters == 1
        collection.commit()  # as the connection does when it closes
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["second"]


async def test_a_reader_that_parks_again_passes_its_wake_on(collection):
    q = collection.get_or_create(b"w")
    order = []

    async def picky():
        await collection.wait_for_item([q.name], trio.current_time() + 3600)
        order.append("picky woke")
        # takes nothing; parks again (with a short deadline)
        await collection.wait_for_item([q.name], trio.current_time() + 0.01)

    async with nursery() as tasks:
        tasks.start_soon(picky)
        await trio.testing.wait_all_tasks_blocked()
        tasks.start_soon(park, collection, [q], order, "other")
        await trio.testing.wait_all_tasks_blocked()
        q.put(b"x", 0, 0)
    assert order == ["picky woke", "other"]


def reference_cuts(starts, steps, spread=1.0):
    cuts, times = [0], [steps[0]]
    for k in range(1, len(steps)):
        if abs(steps[k] - times[-1]) > spread:
            cuts.append(starts[k])
            times.append(steps[k])
    return cuts, times


@pytest.mark.parametrize("steps", [
    [0.0, 0.5, 1.0, 1.01, 2.5, 2.6, 9.0],       # in order: the bisecting path
    [5.0, 5.0, 5.0],
    [3.0, 3.5, 1.0, 1.2, 4.0, 3.9, 10.0],       # the clock went back
])
def test_frame_cuts_match_the_plain_loop(steps):
    starts = [2 * k for k in range(len(steps))]
    assert snapshot_module.frame_cuts(starts, steps) == reference_cuts(starts, steps)
    per_item = range(len(steps))
    assert snapshot_module.frame_cuts(per_item, steps) == reference_cuts(per_item, steps)
