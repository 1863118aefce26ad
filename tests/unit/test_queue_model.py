"""Random operation sequences against a plain-Python model of the queue,
with crashes, clean restarts and rewrites thrown in: whatever the journal
did (bulk replay paths, recovered blocks, reopened transactions), the queue
must hold exactly what the model holds."""

import random
from collections import deque

import pytest

from starlingpy.journal import SyncPolicy
from starlingpy.journal.store import JournalStore

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
