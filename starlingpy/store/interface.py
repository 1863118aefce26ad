"""The storage boundary: all that the session and the TCP shell may ask of
a store, and nothing else. See docs/storage.md for what a store must
guarantee.

Names are queue names (bytes); owners are plain ids (a connection number).
Every call may answer at once or with a :class:`Pending`: a store that
works in memory answers at once (the hot path stays synchronous), one that
waits on a disk or a network returns a Pending, which the caller awaits
without blocking other connections.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from ..queue import Item, Owner, QueueStatistics

T = TypeVar("T")


class Pending(Generic[T]):
    """An answer that is not ready yet: ``await pending.wait()`` for it.

    Any store call, and so any command, may return one; the shell awaits it
    (after sending the replies before it) and goes on.
    """

    __slots__ = ("wait",)

    def __init__(self, wait: Callable[[], Awaitable[T]]) -> None:
        self.wait = wait


Answer = T | Pending[T]  # what a store call returns: the value, or a Pending of it


class StoreError(Exception):
    """The store cannot do it now (a full disk, a lost database): the
    command is answered ``reply`` and the connection lives on."""

    def __init__(self, reply: bytes, message: str = "") -> None:
        super().__init__(message or reply.decode("ascii", "replace"))
        self.reply = reply


class Store(Protocol):
    """Queues by name. Unless a method says otherwise it returns its value
    or a :class:`Pending` of it, and raises :class:`StoreError` for what the
    client should be told."""

    # -- queues ------------------------------------------------------------

    def exists(self, name: bytes) -> bool:
        """Whether a queue of that name exists (answered from memory)."""

    def put(self, name: bytes, data: bytes, flags: int, exptime: int, *, delay_ms: int = 0,
            unique: bytes | None = None) -> Answer[bool]:
        """Append an item, creating the queue if new. False when the queue
        is full or the item too large for it (``NOT_STORED``).

        ``delay_ms`` (0 to ``queue.MAX_DELAY_MS``): no take sees the item
        until then, durably (a restart keeps its due time); once due it
        keeps its place in arrival order, and a reader parked in
        :meth:`wait_for_item` is woken (by :meth:`run_background`).
        ``unique`` (1-200 bytes of ``[A-Za-z0-9_.:-]``, checked by the
        protocol): False, nothing changed, while an item with that id is in
        the queue, waiting, delayed or open; free again once the item is
        taken (for an open one, confirmed). Both survive restarts."""

    def delete(self, name: bytes) -> Answer[bool]:
        """Drop the queue, its items and its files; False if none."""

    def flush(self, name: bytes) -> Answer[None]:
        """Drop every waiting item of one queue (open items stay open)."""

    def flush_all(self) -> Answer[None]:
        """Flush every queue."""

    # -- taking --------------------------------------------------------------

    def take(self, names: Sequence[bytes]) -> Answer[Item | None]:
        """Remove and return the head item of the first of ``names`` that has
        one (priority alternatives); None if all are empty or missing."""

    def peek(self, names: Sequence[bytes]) -> Answer[Item | None]:
        """Like :meth:`take`, but the item stays where it is."""

    def open_item(self, names: Sequence[bytes], owner: Owner) -> Answer[Item | None]:
        """Like :meth:`take`, but the item is held aside as ``owner``'s open
        item of the queue it came from until close, abort or release."""

    def close_item(self, names: Sequence[bytes], owner: Owner) -> Answer[bool]:
        """Confirm ``owner``'s open item on any of ``names``: gone for good."""

    def abort_item(self, names: Sequence[bytes], owner: Owner) -> Answer[bool]:
        """Put ``owner``'s open item on any of ``names`` back at the head."""

    def holds_open(self, owner: Owner, names: Sequence[bytes] | None = None) -> bool:
        """Whether ``owner`` holds an open item (on any of ``names``, or at
        all). Answered from memory: the owner's connection is on this server."""

    def release(self, owner: Owner) -> Answer[None]:
        """The owner is gone: every open item it holds goes back to the head
        (a held one keeps its number and unique id, and is due at once)."""

    async def wait_for_item(self, names: Sequence[bytes], deadline: float) -> None:
        """Park until any of ``names`` may have an item, or until ``deadline``
        (``trio.current_time()``). Never creates a queue; counts as a waiter
        on each name meanwhile. A wake-up is a hint: take, and wait again if
        nothing was there. Checkpoints; cancel-safe."""

    # -- the rest --------------------------------------------------------------

    def statistics(self) -> Answer[dict[bytes, QueueStatistics]]:
        """Every queue's counters, taken at one moment, by name."""

    def commit(self) -> Pending[None] | None:
        """Make every change so far durable enough to reply: None when the
        replies may go now, else a Pending to await first. The shell calls
        it before each batch of replies."""

    async def run_background(self, *, task_status: Any = ...) -> None:
        """Background maintenance (periodic sync, compaction, lease expiry)
        until cancelled; ``task_status.started()`` once running."""

    def close(self) -> None:
        """Make everything durable and let go of every resource. Idempotent."""

