"""Every store the server can run on, behind one fixture: the conformance
suite runs against each. A store added later is added here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import trio

from starlingpy.journal import SyncPolicy
from starlingpy.journal.store import JournalStore
from starlingpy.queue import QueueLimits
from starlingpy.store import Pending
from starlingpy.store.memory import AnswersLater, MemoryStore
from tests.pgschema import PG_URL, private_schema
from tests.unit.conftest import Clock

STORES = ["journal", "memory", "memory-answers-later", pytest.param("postgresql", marks=pytest.mark.db)]


@dataclass
class StoreKind:
    """Makes stores of one kind; ``reopen`` gives a store over the same data
    (None for stores that keep nothing)."""
    name: str
    make: Callable[..., object]
    reopen: Callable[..., object] | None
    clock: Clock
    held_items: bool = True  # delayed and unique items (PROTOCOL: "Delayed items", "Unique items")


@pytest.fixture(params=STORES)
def kind(request, tmp_path) -> StoreKind:
    clock = Clock()
    opened: list = []

    def journal(**limits):
        store = JournalStore.open(tmp_path / "spool", sync=SyncPolicy.parse("never"), clock=clock,
                                  **limits)
        opened.append(store)
        return store

    def memory(**limits):
        store = MemoryStore(clock=clock, **limits)
        opened.append(store)
        return store

    if request.param == "postgresql":
        from starlingpy.store.postgres import PostgresStore

        with private_schema() as schema:
            def postgresql(**limits):
                store = PostgresStore.open(PG_URL, schema=schema, identity="conformance",
                                           clock=clock, **limits)
                opened.append(store)
                return store

            yield StoreKind("postgresql", postgresql, postgresql, clock, held_items=False)
            for store in opened:
                store.close()
        return
    if request.param == "journal":
        yield StoreKind("journal", journal, journal, clock)
    elif request.param == "memory":
        yield StoreKind("memory", memory, None, clock)
    else:
        yield StoreKind("memory-answers-later", lambda **kw: AnswersLater(memory(**kw)), None, clock)
    for store in opened:
        store.close()


async def answer(value):
    """A store call's answer, awaited if it is a Pending."""
    if value.__class__ is Pending:
        return await value.wait()
    return value


def limits(**kwargs) -> dict:
    """Store arguments giving every queue these limits."""
    return {"default_limits": QueueLimits(**kwargs)}


async def settle() -> None:
    """Let every task that can run, run."""
    await trio.testing.wait_all_tasks_blocked()
