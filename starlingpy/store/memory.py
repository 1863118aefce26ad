"""Stores that keep nothing on disk: for tests of everything above the
storage boundary, and for a server whose queues may die with it."""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..queue import Queue, Unlogged
from .interface import Pending
from .local import LocalStore


class MemoryStore(LocalStore):
    """Queues in memory only: the same rules, no durability."""

    def _new_queue(self, name: bytes) -> Queue:
        return self._make_queue(name, Unlogged())


def _answer_later(method: str) -> Callable:
    def call(self, *args, **options):
        operation = getattr(self.inner, method)

        async def later():
            await trio.lowlevel.checkpoint()
            answer = operation(*args, **options)
            return await answer.wait() if answer.__class__ is Pending else answer

        return Pending(later)

    call.__name__ = method
    return call


class AnswersLater:
    """Wraps a store so that every call answers with a :class:`Pending`,
    carried out only when awaited, as a store across a network would: the
    test double for "any command may wait"."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, attr: str):
        return getattr(self.inner, attr)

    for _method in ("put", "delete", "flush", "flush_all", "take", "peek", "open_item",
                    "close_item", "abort_item", "release", "statistics", "commit"):
        locals()[_method] = _answer_later(_method)
    del _method
