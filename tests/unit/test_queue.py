"""One queue: FIFO, expiry, limits, reliable reads, statistics, and what
survives a restart. Real files in tmp_path, an injected clock."""

import pytest

from starlingpy.queue import QueueLimits
from tests.unit.conftest import T0, drain, open_c


@pytest.fixture
def open_collection(tmp_path, clock):
    opened = []

    def make(**kwargs):
        collection = open_c(tmp_path / "q", clock=clock, **kwargs)
        opened.append(collection)
        return collection

    yield make
    for collection in opened:
        collection.close()


def restart(collection, make, crash=False):
    collection.commit()
    collection.abandon() if crash else collection.close()
    return make()


def test_fifo_with_flags_round_trip_and_restart(open_collection):
    c = open_collection()
    q = c.get_or_create(b"jobs")
    for i in range(5):
        assert q.put(b"item%d" % i, i, 0)
    first = q.take_nowait()
    assert (first.data, first.flags) == (b"item0", 0)
    c = restart(c, open_collection, crash=True)
    q = c.get(b"jobs")
    item = q.take_nowait()
    assert (item.data, item.flags) == (b"item1", 1)
    assert drain(q) == [b"item2", b"item3", b"item4"]
    assert q.take_nowait() is None
    c = restart(c, open_collection)
    assert c.get(b"jobs").statistics().items == 0


def test_pending_records_are_lost_only_if_never_written(open_collection):
    c = open_collection()
    q = c.get_or_create(b"jobs")
    q.put(b"written", 0, 0)
    c.commit()
    q.put(b"never written", 0, 0)
    c.abandon()  # a crash before write_pending: that put was never acknowledged
    c = open_collection()
    assert drain(c.get(b"jobs")) == [b"written"]


def test_a_taken_item_is_never_handed_out_again(open_collection):
    c = open_collection()
    q = c.get_or_create(b"jobs")
    q.put(b"a", 0, 0)
    q.put(b"b", 0, 0)
    c.commit()
    assert q.take_nowait().data == b"a"
    c.commit()  # the dispatcher does this before the reply
    c.abandon()
    c = open_collection()
    assert drain(c.get(b"jobs")) == [b"b"]


@pytest.mark.parametrize("exptime, alive_at, dead_at", [
    (10, T0 + 9.9, T0 + 10),                       # relative seconds
    (2_592_000, T0 + 2_591_999, T0 + 2_592_000),   # the largest relative value
    (int(T0) + 50, T0 + 49, T0 + 50),              # absolute unix time
])
def test_expiry(open_collection, clock, exptime, alive_at, dead_at):
    c = open_collection()
    q = c.get_or_create(b"e")
    q.put(b"x", 0, exptime)
    q.put(b"y", 0, exptime)
    clock.now = alive_at
    assert q.take_nowait().data == b"x"
    clock.now = dead_at
    assert q.peek_nowait() is None and q.take_nowait() is None
    stats = q.statistics()
    assert (stats.items, stats.expired_items, stats.total_items) == (0, 1, 2)


@pytest.mark.parametrize("exptime", [-1, 2_592_001, int(T0)])
def test_already_expired_items_are_counted_not_kept(open_collection, exptime):
    c = open_collection()
    q = c.get_or_create(b"e")
    assert q.put(b"x", 0, exptime) is True
    stats = q.statistics()
    assert (stats.items, stats.total_items, stats.expired_items) == (0, 1, 1)
    assert q.take_nowait() is None


def test_expiry_survives_restart(open_collection, clock):
    c = open_collection()
    q = c.get_or_create(b"e")
    q.put(b"short", 0, 5)
    q.put(b"long", 0, 500)
    c = restart(c, open_collection, crash=True)
    clock.now = T0 + 10
    q = c.get(b"e")
    assert q.take_nowait().data == b"long"
    assert q.statistics().expired_items == 1


def test_max_age_caps_expiry(open_collection, clock):
    c = open_collection(default_limits=QueueLimits(max_age=30))
    q = c.get_or_create(b"a")
    q.put(b"forever", 0, 0)
    q.put(b"late", 0, 3600)
    q.put(b"early", 0, 10)
    clock.now = T0 + 29
    assert q.take_nowait().data == b"forever"
    clock.now = T0 + 31
    assert q.take_nowait() is None
    assert q.statistics().expired_items == 2


def test_full_queue_refuses(open_collection):
    c = open_collection(default_limits=QueueLimits(max_items=2))
    q = c.get_or_create(b"f")
    assert q.put(b"1", 0, 0) and q.put(b"2", 0, 0)
    assert q.put(b"3", 0, 0) is False
    assert drain(q) == [b"1", b"2"]


def test_full_queue_discards_oldest_when_configured(open_collection):
    c = open_collection(limits_by_name={b"d": QueueLimits(max_items=2, discard_old=True)})
    q = c.get_or_create(b"d")
    for x in (b"1", b"2", b"3"):
        assert q.put(x, 0, 0)
    assert q.statistics().items == 2
    c = restart(c, open_collection, crash=True)
    assert drain(c.get(b"d")) == [b"2", b"3"]
    assert c.get_or_create(b"other").put(b"x", 0, 0)  # limits were only for b"d"


def test_max_bytes(open_collection):
    c = open_collection(default_limits=QueueLimits(max_bytes=10))
    q = c.get_or_create(b"b")
    assert q.put(b"12345", 0, 0) and q.put(b"67890", 0, 0)
    assert q.put(b"x", 0, 0) is False
    assert q.statistics().bytes == 10


def test_max_bytes_discard_old_never_discards_for_an_item_that_cannot_fit(open_collection):
    c = open_collection(default_limits=QueueLimits(max_bytes=10, discard_old=True))
    q = c.get_or_create(b"b")
    assert q.put(b"12345", 0, 0) and q.put(b"67890", 0, 0)
    assert q.put(b"x" * 11, 0, 0) is False
    assert q.put(b"abc", 0, 0) is True
    assert drain(q) == [b"67890", b"abc"]


def test_max_item_size(open_collection):
    c = open_collection(default_limits=QueueLimits(max_item_size=4))
    q = c.get_or_create(b"s")
    assert q.put(b"1234", 0, 0) is True
    assert q.put(b"12345", 0, 0) is False
    assert q.statistics().total_items == 1


def test_peek_leaves_the_item(open_collection):
    c = open_collection()
    q = c.get_or_create(b"p")
    assert q.peek_nowait() is None
    q.put(b"a", 3, 0)
    assert q.peek_nowait().data == b"a" and q.peek_nowait().flags == 3
    assert q.take_nowait().data == b"a"


def test_open_close_abort_and_release(open_collection):
    c = open_collection()
    q = c.get_or_create(b"r")
    for x in (b"a", b"b", b"c"):
        q.put(x, 0, 0)
    one, two = object(), object()
    assert q.open_nowait(one).data == b"a"
    assert q.has_open(one) and not q.has_open(two)
    with pytest.raises(ValueError):
        q.open_nowait(one)
    assert q.open_nowait(two).data == b"b"
    assert q.statistics().open_transactions == 2
    assert q.close_open(one) is True and q.close_open(one) is False
    assert q.abort_open(two) is True and q.abort_open(two) is False
    assert q.peek_nowait().data == b"b"
    assert q.open_nowait(one).data == b"b"
    q.abort_open(one)  # what a store's release does for each of the owner's queues
    q.abort_open(one)  # nothing open: no effect
    assert q.statistics().open_transactions == 0
    assert drain(q) == [b"b", b"c"]


def test_open_items_come_back_at_the_head_after_a_crash(open_collection):
    c = open_collection()
    q = c.get_or_create(b"r")
    for x in (b"a", b"b", b"c", b"d"):
        q.put(x, 0, 0)
    owners = [object() for _ in range(3)]
    q.open_nowait(owners[0])   # a
    q.open_nowait(owners[1])   # b
    q.close_open(owners[0])    # a gone
    q.open_nowait(owners[2])   # c
    c = restart(c, open_collection, crash=True)
    q = c.get(b"r")
    assert q.statistics().open_transactions == 0
    assert q.statistics().items == 3
    # A second crash right away must not bring them back twice.
    c = restart(c, open_collection, crash=True)
    q = c.get(b"r")
    assert drain(q) == [b"b", b"c", b"d"]


def test_open_items_survive_a_rewrite_still_open(open_collection):
    c = open_collection()
    q = c.get_or_create(b"r")
    for x in (b"a", b"b", b"c"):
        q.put(x, 0, 0)
    owner = object()
    q.open_nowait(owner)
    assert c.compact(b"r")
    assert q.close_open(owner)  # closes the transaction the rewrite re-opened
    c = restart(c, open_collection, crash=True)
    assert drain(c.get(b"r")) == [b"b", b"c"]


def test_flush_keeps_open_items(open_collection):
    c = open_collection()
    q = c.get_or_create(b"f")
    for x in (b"a", b"b", b"c"):
        q.put(x, 0, 0)
    owner = object()
    q.open_nowait(owner)
    q.flush()
    assert q.statistics().items == 0 and q.take_nowait() is None
    q.abort_open(owner)
    c = restart(c, open_collection, crash=True)
    assert drain(c.get(b"f")) == [b"a"]


def test_statistics_track_every_counter(open_collection, clock):
    c = open_collection()
    q = c.get_or_create(b"s")
    q.put(b"abc", 0, 0)
    q.put(b"de", 0, 0)
    c.commit()
    clock.now = T0 + 1.5
    q.take_nowait()
    c.commit()
    stats = c.statistics()[b"s"]
    assert (stats.items, stats.total_items, stats.bytes, stats.age_ms) == (1, 2, 2, 1500)
    assert stats.logsize == (c.directory / "s.spq").stat().st_size
    assert stats.waiters == 0 and stats.open_transactions == 0


def test_recovered_items_keep_their_enqueue_time(open_collection, clock):
    c = open_collection()
    q = c.get_or_create(b"s")
    q.put(b"old", 0, 0)
    c.commit()
    clock.now = T0 + 100
    q.put(b"new", 0, 0)
    c = restart(c, open_collection, crash=True)
    clock.now = T0 + 200
    q = c.get(b"s")
    q.take_nowait()
    assert q.statistics().age_ms == 200_000
    q.take_nowait()
    assert q.statistics().age_ms == 100_000


def test_the_oldest_waiting_items_age(open_collection, clock):
    c = open_collection()
    q = c.get_or_create(b"o")
    assert q.statistics().oldest_age_ms == 0  # empty
    q.put(b"first", 0, 0)
    clock.now = T0 + 1
    q.put(b"second", 0, 0)
    clock.now = T0 + 2.5
    assert q.statistics().oldest_age_ms == 2500
    q.take_nowait()
    assert q.statistics().oldest_age_ms == 1500  # the next head came a second later
    q.take_nowait()
    assert q.statistics().oldest_age_ms == 0
