"""Queues kept in this process: the part of a store that is the same
whether the queues are made durable by a journal or not.

:class:`LocalStore` maps names to :class:`~starlingpy.queue.Queue` objects,
answers every :class:`~starlingpy.store.Store` call at once, remembers which
owner holds which open items, and parks waiting readers on names (so a
waiting get never creates a queue). Subclasses decide what a queue is kept
in: :class:`~starlingpy.store.memory.MemoryStore` nothing,
:class:`~starlingpy.journal.store.JournalStore` a journal file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from ..queue import NO_LIMITS, Item, Owner, Queue, QueueLimits, QueueStatistics, Waiters, wake_one
from .interface import StoreError

TOO_MANY_QUEUES = b"SERVER_ERROR too many queues"
DUE_CHECK_SECONDS = 1.0


class LocalStore:
    """Every queue of one server, in memory. Single-threaded (the trio thread)."""

    def __init__(self, *, default_limits: QueueLimits = NO_LIMITS,
                 limits_by_name: Mapping[bytes, QueueLimits] = {},
                 clock: Callable[[], float] = time.time, max_queues: int | None = None) -> None:
        self._default_limits = default_limits
        self.max_queues = max_queues
        self._limits_by_name = dict(limits_by_name)
        self.clock = clock
        self._queues: dict[bytes, Queue] = {}
        self._waiters = Waiters()
        self._open_names: dict[Owner, set[bytes]] = {}  # owner -> queues it holds an open item of
        # Names a woken reader was parked on: once it has tried to take, a
        # wake it did not use is passed on (see _pass_on_wakes).
        self._woken_on: list[bytes] = []
        self._delayed: set[bytes] = set()  # queues that may hold delayed items
        self._delay_added = trio.Event()  # a delayed item was put: the due timer looks again
        self._closed = False

    # -- what subclasses provide --------------------------------------------

    def _new_queue(self, name: bytes) -> Queue:
        """A new, empty queue called ``name``, ready to use."""
        raise NotImplementedError

    def _queue_dropped(self, queue: Queue) -> None:
        """``queue`` was deleted: let go of what keeps it."""

    def _logsize(self, queue: Queue) -> int:
        """Bytes ``queue`` keeps on disk."""
        return 0

    def _make_queue(self, name: bytes, log) -> Queue:
        """A queue with this store's limits and clock, reporting to ``log``,
        registered under ``name``."""
        queue = Queue(name, self._limits_by_name.get(name, self._default_limits), self.clock,
                      log, self._waiters.slot(name))
        self._queues[name] = queue
        return queue

    # -- queues --------------------------------------------------------------

    def get(self, name: bytes) -> Queue | None:
        """The queue called ``name`` if it exists (for the store and tests)."""
        return self._queues.get(name)

    def get_or_create(self, name: bytes) -> Queue:
        """The queue called ``name``, created if new."""
        queue = self._queues.get(name)
        if queue is None:
            if self._closed:
                raise RuntimeError("store is closed")
            if self.max_queues is not None and len(self._queues) >= self.max_queues:
                raise StoreError(TOO_MANY_QUEUES)
            queue = self._new_queue(name)
        return queue

    def exists(self, name: bytes) -> bool:
        return name in self._queues

    def waiting(self, name: bytes) -> int:
        """Readers parked on ``name``, whether or not a queue of that name exists."""
        return self._waiters.count(name)

    def names(self) -> list[bytes]:
        """Every queue's name, sorted."""
        return sorted(self._queues)

    def put(self, name: bytes, data: bytes, flags: int, exptime: int, *, delay_ms: int = 0,
            unique: bytes | None = None) -> bool:
        queue = self._queues.get(name)
        if queue is None:
            queue = self.get_or_create(name)
        return self._put_into(queue, data, flags, exptime, delay_ms, unique)

    def _put_into(self, queue: Queue, data: bytes, flags: int, exptime: int, delay_ms: int,
                  unique: bytes | None) -> bool:
        if not delay_ms and unique is None:
            return queue.put(data, flags, exptime)
        stored = queue.put(data, flags, exptime, delay_ms, unique)
        if stored and delay_ms:
            self.watch_due(queue.name)
        return stored

    def watch_due(self, name: bytes) -> None:
        """Queue ``name`` holds delayed items: wake its readers when they fall due."""
        self._delayed.add(name)
        self._delay_added.set()

    def delete(self, name: bytes) -> bool:
        queue = self._queues.pop(name, None)
        if queue is None:
            return False
        for names in self._open_names.values():
            names.discard(name)
        queue.drop_all()  # blocked readers re-check (and find nothing)
        self._queue_dropped(queue)
        self._waiters.forget_if_idle(name)
        return True

    def flush(self, name: bytes) -> None:
        queue = self._queues.get(name)
        if queue is not None:
            queue.flush()

    def flush_all(self) -> None:
        for queue in self._queues.values():
            queue.flush()

    # -- taking ----------------------------------------------------------------

    def take(self, names: Sequence[bytes]) -> Item | None:
        queues = self._queues
        for name in names:
            queue = queues.get(name)
            if queue is not None:
                item = queue.take_nowait()
                if item is not None:
                    return item
        return None

    def peek(self, names: Sequence[bytes]) -> Item | None:
        for name in names:
            queue = self._queues.get(name)
            if queue is not None:
                item = queue.peek_nowait()
                if item is not None:
                    return item
        return None

    def open_item(self, names: Sequence[bytes], owner: Owner) -> Item | None:
        for name in names:
            queue = self._queues.get(name)
            if queue is not None:
                item = queue.open_nowait(owner)
                if item is not None:
                    self._open_names.setdefault(owner, set()).add(name)
                    return item
        return None

    def close_item(self, names: Sequence[bytes], owner: Owner) -> bool:
        return self._settle(names, owner, Queue.close_open)

    def abort_item(self, names: Sequence[bytes], owner: Owner) -> bool:
        return self._settle(names, owner, Queue.abort_open)

    def _settle(self, names: Sequence[bytes], owner: Owner, step) -> bool:
        held = self._open_names.get(owner)
        if not held:
            return False
        done = False
        for name in names:
            if name in held:
                held.discard(name)
                queue = self._queues.get(name)
                done = (queue is not None and step(queue, owner)) or done
        if not held:
            del self._open_names[owner]
        return done

    def holds_open(self, owner: Owner, names: Sequence[bytes] | None = None) -> bool:
        held = self._open_names.get(owner)
        if not held:
            return False
        return names is None or any(name in held for name in names)

    def release(self, owner: Owner) -> None:
        for name in self._open_names.pop(owner, ()):
            queue = self._queues.get(name)
            if queue is not None:
                queue.abort_open(owner)

    # -- waiting ---------------------------------------------------------------

    async def wait_for_item(self, names: Sequence[bytes], deadline: float) -> None:
        """See :meth:`Store.wait_for_item`.

        A put wakes one parked reader per item, not all of them. The woken
        caller is expected to try to take at once (before its next
        checkpoint), then to come back here or to let ``commit`` run, as the
        connection loop does before every reply: either passes the wake on
        to another reader if the item is still there.
        """
        if self._woken_on:
            self._pass_on_wakes()
        queues = self._queues
        for name in names:
            queue = queues.get(name)
            if queue is not None and len(queue):
                await trio.lowlevel.checkpoint()
                return
        reader = trio.Event()
        slots = self._waiters.park(reader, names)
        try:
            with trio.move_on_at(deadline):
                await reader.wait()
        finally:
            self._waiters.unpark(reader, names, slots, kept=queues)  # (a queue holds its slot)
            if reader.is_set():
                self._woken_on += names

    def _pass_on_wakes(self) -> None:
        """Readers woken by a put have had their try: where items are still
        waiting with readers parked and none of those readers woken, wake one
        (it passes the wake on in turn if it has no use for it)."""
        names, self._woken_on = self._woken_on, []
        for name in names:
            queue = self._queues.get(name)
            if (queue is not None and len(queue) and queue.waiters
                    and not any(reader.is_set() for reader in queue.waiters)):
                wake_one(queue.waiters)

    # -- the rest ----------------------------------------------------------------

    def statistics(self) -> dict[bytes, QueueStatistics]:
        """Every queue's counters; a name that readers wait on but that has no
        queue (waiting never creates one) shows as empty with its waiters, so
        operators see who waits for what."""
        logsize = self._logsize
        return self._waiters.with_waited_names(
            {name: queue.statistics(logsize(queue)) for name, queue in self._queues.items()})

    def commit(self) -> None:
        if self._woken_on:
            self._pass_on_wakes()
        return None

    async def run_background(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self.wake_when_due()

    async def wake_when_due(self) -> None:
        """Until cancelled: when a delayed item falls due, wake a reader
        parked on its queue. Sleeps until the earliest due time, but never
        more than ``DUE_CHECK_SECONDS`` (a clock that is not the wall clock,
        as tests inject, is looked at again that often)."""
        while True:
            earliest = None
            for name in list(self._delayed):
                queue = self._queues.get(name)
                due = queue.next_due() if queue is not None else None
                if due is not None:
                    queue.promote_due()
                    due = queue.next_due()
                if due is None:
                    self._delayed.discard(name)
                elif earliest is None or due < earliest:
                    earliest = due
            self._delay_added = trio.Event()
            wait = DUE_CHECK_SECONDS if earliest is None else earliest - self.clock()
            with trio.move_on_after(max(0.0, min(wait, DUE_CHECK_SECONDS))):
                await self._delay_added.wait()

    def close(self) -> None:
        self._closed = True
