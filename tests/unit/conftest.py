"""Shared by the storage tests: an injected wall clock (expiry, age),
opening a queue directory, and draining a queue."""

from __future__ import annotations

import pytest
import trio

from starlingpy.journal import SyncPolicy
from starlingpy.journal.store import JournalStore

T0 = 1_800_000_000.0


class Clock:
    """Callable like time.time; tests move ``now`` by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def drain(queue) -> list[bytes]:
    """Take every item off ``queue``; their data, in order."""
    out = []
    while (item := queue.take_nowait()) is not None:
        out.append(item.data)
    return out


def open_c(qdir, **kwargs) -> JournalStore:
    """Open the queue directory ``qdir`` (sync ``never`` unless given)."""
    kwargs.setdefault("sync", SyncPolicy.parse("never"))
    return JournalStore.open(qdir, **kwargs)


async def durable(store) -> None:
    """Commit, and wait until that is as durable as the sync policy makes it."""
    pending = store.commit()
    if pending is not None:
        await pending.wait()
    else:
        await trio.lowlevel.checkpoint()
