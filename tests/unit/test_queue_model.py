"""Random operation sequences against a plain-Python model of the queue,
with crashes, clean restarts and rewrites thrown in: whatever the journal
did (bulk replay paths, recovered blocks, reopened transactions), the queue
must hold exactly what the model holds."""

import random
from collections import deque

import pytest

from starlingpy.journal import SyncPolicy
from starlingpy.journal.store import JournalStore
from tests.unit.conftest import Clock

OWNERS = 3


class Model:
    def __init__(self) -> None:
        self.waiting: deque[tuple[int, bytes]] = deque()  # (sequence number, data)
        self.open: dict[int, tuple[int, tuple[int, bytes]]] = {}  # owner: (opened as, item)
        self.opened = 0

    def take_open(self, owner: int) -> tuple[int, bytes] | None:
        entry = self.waiting.popleft() if self.waiting else None
        if entry:
            self.opened += 1
            self.open[owner] = (self.opened, entry)
        return entry

    def restart(self) -> None:
        # Open items come back at the head, in the order they were handed out.
        for _, entry in sorted(self.open.values(), reverse=True):
            self.waiting.appendleft(entry)
        self.open.clear()


def check(queue, model):
    stats = queue.statistics()
    assert stats.items == len(model.waiting)
    assert stats.bytes == sum(len(d) for _, d in model.waiting)
    assert stats.open_transactions == len(model.open)


@pytest.fixture(params=["default", "tiny-blocks"])
def block_sizes(request, monkeypatch):
    """With tiny blocks, recent items are sealed every few puts and blocks
    hold a few items, so sealing, thawing and their rewrites are exercised."""
    if request.param == "tiny-blocks":
        from starlingpy import blocks, queue
        from starlingpy.journal import replay
        monkeypatch.setattr(queue, "SEAL_ITEMS", 5)
        monkeypatch.setattr(blocks, "RUN_BYTES", 60)
        monkeypatch.setattr(replay, "RUN_ITEMS", 4)
        monkeypatch.setattr(replay, "RUN_BYTES", 50)
    return request.param


@pytest.mark.parametrize("seed", range(12))
def test_random_operations_match_the_model(tmp_path, seed, block_sizes):
    rng = random.Random(seed)
    directory = tmp_path / "q"

    def open_collection():
        return JournalStore.open(directory, sync=SyncPolicy.parse("never"),
                                    max_journal_size=rng.choice([400, 1 << 20]))

    c = open_collection()
    q = c.get_or_create(b"m")
    model = Model()
    owners = [object() for _ in range(OWNERS)]
    sequence = 0
    for _ in range(400):
        op = rng.random()
        k = rng.randrange(OWNERS)
        if op < 0.35:
            data = b"%d:" % sequence + b"x" * rng.randrange(0, 30)
            assert q.put(data, sequence, 0)
            model.waiting.append((sequence, data))
            sequence += 1
        elif op < 0.55:
            item = q.take_nowait()
            expected = model.waiting.popleft() if model.waiting else None
            assert (item.data if item else None) == (expected[1] if expected else None)
        elif op < 0.65:
            if k not in model.open:
                item = q.open_nowait(owners[k])
                expected = model.take_open(k)
                assert (item.data if item else None) == (expected[1] if expected else None)
        elif op < 0.72:
            assert q.close_open(owners[k]) == (model.open.pop(k, None) is not None)
        elif op < 0.79:
            entry = model.open.pop(k, None)
            assert q.abort_open(owners[k]) == (entry is not None)
            if entry:
                model.waiting.appendleft(entry[1])
        elif op < 0.81:
            q.flush()
            model.waiting.clear()
        elif op < 0.84:
            item = q.peek_nowait()
            assert (item.data if item else None) == (model.waiting[0][1] if model.waiting else None)
        elif op < 0.87:
            c.commit()
            c.compact(b"m")
        elif op < 0.93:
            c.commit()  # as the dispatcher does before every reply
            c.abandon() if rng.random() < 0.5 else c.close()
            c = open_collection()
            q = c.get(b"m")
            owners = [object() for _ in range(OWNERS)]
            model.restart()
        else:
            c.commit()
        check(q, model)
    got = []
    while (item := q.take_nowait()) is not None:
        got.append((item.flags, item.data))
    assert got == list(model.waiting)
    c.close()


class HeldModel:
    """The queue with delayed and unique items, in plain Python: plain items
    in a FIFO, held ones (delay or unique id) apart; a take hands out the
    earlier arrival of the FIFO's head and the earliest due held item."""

    def __init__(self) -> None:
        self.fifo: deque[tuple[float, bytes]] = deque()  # (added, data)
        self.held: dict[int, tuple[float, float, bytes | None, bytes]] = {}  # seq: (added, due, id, data)
        self.open: dict[int, tuple[int, object]] = {}  # owner: (opened as, ("fifo", entry) | ("held", seq, entry))
        self.opened = 0
        self.seq = 0

    def ids_in_use(self) -> set:
        ids = {entry[2] for entry in self.held.values()}
        ids |= {entry[2][2] for _, entry in self.open.values() if entry[0] == "held"}
        return ids - {None}

    def put(self, now: float, data: bytes, delay: float, unique: bytes | None) -> bool:
        if not delay and unique is None:
            self.fifo.append((now, data))
            return True
        if unique is not None and unique in self.ids_in_use():
            return False
        self.seq += 1
        self.held[self.seq] = (now, now + delay, unique, data)
        return True

    def _next(self, now: float):
        ready = sorted((entry[0], seq) for seq, entry in self.held.items() if entry[1] <= now)
        if ready and (not self.fifo or ready[0][0] < self.fifo[0][0]):
            return ("held", ready[0][1], self.held[ready[0][1]])
        return ("fifo", self.fifo[0]) if self.fifo else None

    def peek(self, now: float) -> bytes | None:
        found = self._next(now)
        return None if found is None else found[-1][-1]

    def take(self, now: float, owner: int | None = None) -> bytes | None:
        found = self._next(now)
        if found is None:
            return None
        if found[0] == "held":
            del self.held[found[1]]
        else:
            self.fifo.popleft()
        if owner is not None:
            self.opened += 1
            self.open[owner] = (self.opened, found)
        return found[-1][-1]

    def abort(self, owner: int) -> bool:
        entry = self.open.pop(owner, None)
        if entry is not None:
            self._put_back(entry[1])
        return entry is not None

    def _put_back(self, found) -> None:
        if found[0] == "held":
            self.held[found[1]] = found[2]
        else:
            self.fifo.appendleft(found[1])

    def restart(self) -> None:
        for _, found in sorted(self.open.values(), key=lambda entry: entry[0], reverse=True):
            self._put_back(found)
        self.open.clear()

    def counts(self, now: float) -> tuple[int, int]:
        """(items due, items delayed)"""
        due = sum(1 for entry in self.held.values() if entry[1] <= now)
        return len(self.fifo) + due, len(self.held) - due


@pytest.mark.parametrize("seed", range(10))
def test_delayed_and_unique_items_match_the_model_through_crashes(tmp_path, seed, block_sizes):
    """As above, with puts delayed 0-20 s and unique ids from a small set; the
    clock moves 2 s a step (enqueue times a journal frame may merge are
    further apart than that), and every step is committed, as a server
    commits before every reply."""
    rng = random.Random(seed)
    directory = tmp_path / "q"
    clock = Clock()

    def open_store():
        return JournalStore.open(directory, sync=SyncPolicy.parse("never"), clock=clock,
                                 max_journal_size=rng.choice([400, 1 << 20]))

    c = open_store()
    q = c.get_or_create(b"m")
    model = HeldModel()
    owners = [object() for _ in range(OWNERS)]
    for step in range(300):
        clock.now += 2
        now = clock.now
        op = rng.random()
        k = rng.randrange(OWNERS)
        if op < 0.4:
            data = b"%d:" % step + b"x" * rng.randrange(0, 20)
            delay = rng.choice([0, 0, 1, 5, 20])
            unique = rng.choice([None, None, b"a", b"b", b"c", b"d"])
            expected = model.put(now, data, delay, unique)
            assert q.put(data, 0, 0, delay * 1000, unique) == expected
        elif op < 0.55:
            assert (item.data if (item := q.take_nowait()) else None) == model.take(now)
        elif op < 0.65:
            if k not in model.open:
                item = q.open_nowait(owners[k])
                assert (item.data if item else None) == model.take(now, k)
        elif op < 0.72:
            assert q.close_open(owners[k]) == (model.open.pop(k, None) is not None)
        elif op < 0.79:
            assert q.abort_open(owners[k]) == model.abort(k)
        elif op < 0.81:
            q.flush()
            model.fifo.clear()
            model.held.clear()
        elif op < 0.84:
            assert (item.data if (item := q.peek_nowait()) else None) == model.peek(now)
        elif op < 0.87:
            c.commit()
            c.compact(b"m")
        elif op < 0.93:
            c.commit()
            c.abandon() if rng.random() < 0.5 else c.close()
            c = open_store()
            q = c.get(b"m")
            owners = [object() for _ in range(OWNERS)]
            model.restart()
        c.commit()
        stats = q.statistics()
        assert (stats.items, stats.delayed_items) == model.counts(now)
        assert stats.open_transactions == len(model.open)
    clock.now += 60
    got = []
    while (item := q.take_nowait()) is not None:
        got.append(item.data)
    expected = []
    while (data := model.take(clock.now)) is not None:
        expected.append(data)
    assert got == expected
    c.close()
