"""Queue rules: what a queue is, apart from how it is kept.

One FIFO queue of items with memcache expiry, per-queue limits, open
(reliable-read) items held by owners, and the readers waiting by name. No
trio, no journal format, no file I/O: every change is reported to a
:class:`ChangeLog`, which a store makes durable (the journal store turns the
calls into journal records) or ignores (the memory store). Single-threaded;
no method blocks, none formats wire bytes.

Waiting items, oldest first, are ``_head`` + ``_blocks`` + ``_recent``:

* ``_recent``: items put since the last seal, as ``(data, flags, expiry,
  added)`` tuples (the cheapest thing to append, and to pop when the queue
  is short, which is most of the time);
* ``_blocks``: compact :class:`~starlingpy.blocks.ItemRun` blocks.
  ``_recent`` is sealed into blocks, at C speed, once it holds
  ``SEAL_ITEMS`` items; replay recovers items as blocks too;
* ``_head``: tuples again, for the items at the very front: a block is
  thawed back into tuples (at C speed, whole) when it reaches the front,
  and items put back by an abort go here.

So a long queue costs its data plus a few bytes per item, and an item is an
:class:`Item` only once it is handed out.

*Held items* are items put with options (a delay, a unique id): kept apart
in ``_held`` by a number of their own (``seq``), so that one can be taken
out of order and its journal record can name it. A held item is *delayed*
until its due time (``_pending``, a heap by due time), then *ready*
(``_ready``, a heap by arrival): a take hands out whichever comes first in
arrival order, the FIFO's head or the earliest ready held item, so a delayed
item keeps its place among the items that are due. A queue without held
items pays one truthiness test per take for them.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Container, Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .blocks import Entry, ItemRun, seal, thaw

MAX_RELATIVE_EXPTIME = 2_592_000  # 30 days: memcache's line between relative and absolute
MAX_FLAGS = (1 << 32) - 1
_XID_LIMIT = 1 << 32
SEAL_ITEMS = 4096  # recent items kept as tuples before they are sealed into blocks
MAX_DELAY_MS = 366 * 86_400_000  # a year and a day: "/delay=" beyond is a client's mistake
MAX_UNIQUE_ID = 200  # bytes of a unique id

Owner = Hashable
"""Who holds an open item: a plain id (a connection number), never an object
with behaviour, so a store can remember or lease it."""


class Item(NamedTuple):
    """One queued item. ``expiry`` and ``added`` are unix times (``expiry`` 0: never)."""
    data: bytes
    flags: int
    expiry: float
    added: float


class Held(NamedTuple):
    """An item put with options: when it falls due (unix time) and its
    unique id (None: none)."""
    data: bytes
    flags: int
    expiry: float
    added: float
    due: float
    unique: bytes | None


# An Item from a ready (data, flags, expiry, added) tuple, without the
# Python-level __new__ of NamedTuple (a third of its cost).
_new = tuple.__new__


@dataclass(frozen=True)
class QueueLimits:
    """Per-queue limits; ``None`` means unlimited."""
    max_items: int | None = None
    max_bytes: int | None = None
    max_item_size: int | None = None
    max_age: float | None = None  # seconds; caps every item's expiry
    discard_old: bool = False  # full queue: drop oldest instead of refusing


NO_LIMITS = QueueLimits()


class QueueStatistics(NamedTuple):
    """A queue's counters at one moment (the ``queue_<name>_*`` stats). A
    tuple: a snapshot of 10,000 queues is taken in a few milliseconds."""
    items: int
    total_items: int
    logsize: int
    expired_items: int
    age_ms: int
    bytes: int
    open_transactions: int
    waiters: int
    delayed_items: int = 0  # held items not due yet (not in ``items``)
    oldest_age_ms: int = 0  # how long the item at the head has waited (0: none waiting)


def expiry_time(exptime: int, now: float, max_age: float | None = None) -> float:
    """The absolute expiry of an item put ``now`` with memcache's ``exptime``:
    0 never (0.0), up to 30 days relative seconds, more an absolute unix time,
    negative already expired (-1.0); ``max_age`` caps it."""
    if exptime == 0:
        expiry = 0.0
    elif exptime < 0:
        expiry = -1.0
    elif exptime <= MAX_RELATIVE_EXPTIME:
        expiry = now + exptime
    else:
        expiry = float(exptime)
    if max_age is not None and (expiry == 0.0 or expiry > now + max_age):
        expiry = now + max_age
    return expiry


class ChangeLog(Protocol):
    """Where a queue reports each change, in order, as it happens."""

    def add(self, data: bytes, flags: int, expiry: float, added: float) -> None:
        """An item was appended."""

    def remove(self) -> None:
        """The head item was dropped (taken, expired or discarded)."""

    def open(self, xid: int) -> None:
        """The head item became open transaction ``xid``."""

    def close(self, xid: int) -> None:
        """Open transaction ``xid`` was confirmed: its item is gone."""

    def abort(self, xid: int) -> None:
        """Open transaction ``xid``'s item went back to the head."""

    def flush(self) -> None:
        """Every waiting item was dropped, held ones too (open items stay)."""

    def add_held(self, seq: int, item: Held) -> None:
        """A held item numbered ``seq`` was put."""

    def remove_held(self, seq: int) -> None:
        """Held item ``seq`` was dropped (taken or expired)."""

    def open_held(self, xid: int, seq: int) -> None:
        """Held item ``seq`` became open transaction ``xid`` (close and
        abort name the ``xid``; an abort makes it held item ``seq`` again)."""


class Unlogged:
    """A ChangeLog that keeps nothing (queues that live in memory only)."""

    def add(self, data: bytes, flags: int, expiry: float, added: float) -> None:
        pass

    def remove(self) -> None:
        pass

    def open(self, xid: int) -> None:
        pass

    close = abort = remove_held = open

    def flush(self) -> None:
        pass

    def add_held(self, seq: int, item: Held) -> None:
        pass

    def open_held(self, xid: int, seq: int) -> None:
        pass


class Waiters:
    """Readers parked on queue names, whether or not a queue of that name
    exists: waiting never creates a queue. A reader is any object with
    ``set()`` and ``is_set()`` (a ``trio.Event``); it is parked on each name
    it waits for, and a put wakes the longest-parked one not woken already.

    A queue holds its name's slot (the same dict object), so a reader parked
    before the queue was made, or while an earlier queue of that name was
    deleted, hears the puts of the queue made since."""

    def __init__(self) -> None:
        self._slots: dict[bytes, dict] = {}

    def slot(self, name: bytes) -> dict:
        """The (insertion-ordered) readers parked on ``name``, made if missing."""
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = {}
        return slot

    def count(self, name: bytes) -> int:
        slot = self._slots.get(name)
        return len(slot) if slot else 0

    def park(self, reader, names: Sequence[bytes]) -> list[dict]:
        """Park ``reader`` on every one of ``names``; their slots, for :meth:`unpark`."""
        slots = [self.slot(name) for name in names]
        for slot in slots:
            slot[reader] = None
        return slots

    def unpark(self, reader, names: Sequence[bytes], slots: list[dict],
               kept: Container[bytes] = ()) -> None:
        """Take ``reader`` off again; a slot left empty is forgotten unless
        its name is in ``kept`` (the names whose queue holds the slot)."""
        for name, slot in zip(names, slots):
            slot.pop(reader, None)
            if name not in kept:
                self.forget_if_idle(name)

    def with_waited_names(self, stats: dict[bytes, QueueStatistics]) -> dict[bytes, QueueStatistics]:
        """``stats`` (by queue name) plus, for every name readers wait on that
        has no queue, an empty entry with its waiters; sorted by name."""
        for name, slot in self._slots.items():
            if slot and name not in stats:
                stats[name] = QueueStatistics(0, 0, 0, 0, 0, 0, 0, len(slot))
        return dict(sorted(stats.items()))

    def forget_if_idle(self, name: bytes) -> None:
        """Drop an empty slot that no queue holds (``name`` has no queue)."""
        slot = self._slots.get(name)
        if slot is not None and not slot:
            del self._slots[name]


def wake_one(slot: dict) -> None:
    """Wake the longest-parked reader of ``slot`` not woken already."""
    for reader in slot:
        if not reader.is_set():
            reader.set()
            return


def wake_all(slot: dict) -> None:
    for reader in slot:
        reader.set()


class Queue:
    """A FIFO queue of :class:`Item`, its limits and its open items.

    ``log`` hears every change; ``waiters`` is the slot of the readers parked
    on this queue's name (see :class:`Waiters`).
    """

    def __init__(self, name: bytes, limits: QueueLimits, clock: Callable[[], float],
                 log: ChangeLog, waiters: dict) -> None:
        self.name = name
        self.limits = limits
        self.log = log
        self.waiters = waiters
        self._clock = clock
        self._head: deque[Entry] = deque()
        self._blocks: deque[ItemRun] = deque()
        self._recent: deque[Entry] = deque()
        self._count = 0
        self._bytes = 0
        self._total = 0
        self._expired = 0
        self._age = 0.0
        self._open: dict[Owner, tuple[int, Item]] = {}
        self._next_xid = 1
        # Held items (see the module docstring): by number; numbers of the
        # delayed ones as (due, seq) and of the ready ones as (added, seq).
        self._held: dict[int, Held] = {}
        self._pending: list[tuple[float, int]] = []
        self._ready: list[tuple[float, int]] = []
        self._held_bytes = 0
        self._uniques: dict[bytes, int] = {}  # unique id -> seq, waiting, delayed or open
        self._open_held: dict[Owner, tuple[int, Held]] = {}  # owner -> (seq, item) of _open's
        self._next_seq = 1
        self._has_caps = limits.max_items is not None or limits.max_bytes is not None

    def __len__(self) -> int:
        """Items waiting and due (open and delayed items not included)."""
        if self._held:
            self.promote_due()
            return self._count + len(self._ready)
        return self._count

    # -- loading -----------------------------------------------------------

    def restore(self, entries: list, items: int, size: int, next_xid: int) -> None:
        """Take on the waiting items recovered for this new, empty queue
        (``entries``: item tuples and :class:`ItemRun` blocks, in order)."""
        for entry in entries:
            if entry.__class__ is ItemRun:
                self._blocks.append(entry)
            elif self._blocks:  # (recovery puts single items first; stay in order anyway)
                self._blocks += seal([entry])
            else:
                self._head.append(entry)
        self._count = items
        self._bytes = size
        self._next_xid = next_xid % _XID_LIMIT or 1

    def restore_held(self, held: dict[int, tuple], next_seq: int) -> None:
        """Take on the held items recovered for this queue (by number)."""
        for seq, fields in held.items():
            self._keep_held(seq, Held(*fields))
        self._next_seq = max(self._next_seq, next_seq % _XID_LIMIT or 1)

    def append_loaded(self, data: bytes, flags: int, expiry: float, added: float) -> None:
        """Append an item that is already durable (an import): not logged."""
        self._recent.append((data, flags, expiry, added))
        self._count += 1
        self._bytes += len(data)
        if len(self._recent) >= SEAL_ITEMS:
            self._seal_recent()

    # -- adding ------------------------------------------------------------

    def put(self, data: bytes, flags: int, exptime: int, delay_ms: int = 0,
            unique: bytes | None = None) -> bool:
        """Enqueue ``data``. ``exptime`` as memcache has it (see
        :func:`expiry_time`); an already expired item is counted, not kept,
        and still True. ``delay_ms``: no take sees it before then; ``unique``:
        refused while an item with that id is waiting, delayed or open.

        False when the item is larger than ``max_item_size``, the queue is
        full and not ``discard_old``, or ``unique`` is taken (the caller
        answers ``NOT_STORED``). ``ValueError`` if ``flags`` does not fit in
        32 bits, or ``delay_ms`` is out of range.
        """
        if not 0 <= flags <= MAX_FLAGS:
            raise ValueError(f"flags must fit in 32 bits, not {flags}")
        if delay_ms or unique is not None:
            return self._put_held(data, flags, exptime, delay_ms, unique)
        limits = self.limits
        size = len(data)
        if limits.max_item_size is not None and size > limits.max_item_size:
            return False
        now = self._clock()
        expiry = 0.0 if exptime == 0 and limits.max_age is None else expiry_time(
            exptime, now, limits.max_age)
        if expiry and expiry <= now:
            self._total += 1
            self._expired += 1
            return True
        if self._has_caps and not self._make_room(size):
            return False
        recent = self._recent
        recent.append((data, flags, expiry, now))
        self._count += 1
        self._bytes += size
        self._total += 1
        self.log.add(data, flags, expiry, now)
        if len(recent) >= SEAL_ITEMS:
            self._seal_recent()
        if self.waiters:
            wake_one(self.waiters)
        return True

    def _put_held(self, data: bytes, flags: int, exptime: int, delay_ms: int,
                  unique: bytes | None) -> bool:
        if not 0 <= delay_ms <= MAX_DELAY_MS:
            raise ValueError(f"delay must be 0 to {MAX_DELAY_MS} ms, not {delay_ms}")
        if unique is not None and unique in self._uniques:
            return False
        limits = self.limits
        size = len(data)
        if limits.max_item_size is not None and size > limits.max_item_size:
            return False
        now = self._clock()
        due = now + delay_ms / 1000
        expiry = expiry_time(exptime, now, limits.max_age)
        if expiry and expiry <= due:
            self._total += 1  # expires before anyone may see it: counted, not kept
            self._expired += 1
            return True
        if self._has_caps and not self._make_room(size):
            return False
        seq = self._next_seq
        self._next_seq = (seq + 1) % _XID_LIMIT or 1
        item = Held(data, flags, expiry, now, due, unique)
        self._keep_held(seq, item)
        self._total += 1
        self.log.add_held(seq, item)
        if not delay_ms and self.waiters:
            wake_one(self.waiters)
        return True

    def _keep_held(self, seq: int, item: Held) -> None:
        self._held[seq] = item
        self._held_bytes += len(item.data)
        heapq.heappush(self._pending, (item.due, seq))
        if item.unique is not None:
            self._uniques[item.unique] = seq

    def promote_due(self) -> int:
        """Move the delayed items now due among the ready ones, waking a
        parked reader for each; how many."""
        pending = self._pending
        if not pending:
            return 0
        now = self._clock()
        moved = 0
        while pending and pending[0][0] <= now:
            _, seq = heapq.heappop(pending)
            heapq.heappush(self._ready, (self._held[seq].added, seq))
            moved += 1
            if self.waiters:
                wake_one(self.waiters)
        return moved

    def next_due(self) -> float | None:
        """When the next delayed item falls due (unix time), None if none is delayed."""
        return self._pending[0][0] if self._pending else None

    def _make_room(self, size: int) -> bool:
        limits = self.limits
        if limits.max_items == 0 or (limits.max_bytes is not None and size > limits.max_bytes):
            return False  # could never fit: refuse before discarding anything
        held, held_bytes = len(self._held), self._held_bytes  # (held items are never discarded)
        while ((limits.max_items is not None and self._count + held >= limits.max_items)
               or (limits.max_bytes is not None
                   and self._bytes + held_bytes + size > limits.max_bytes)):
            if not limits.discard_old or not self._count:
                return False
            self._pop_entry()
            self.log.remove()
        return True

    def _seal_recent(self) -> None:
        """Turn the recent items into compact blocks (order unchanged)."""
        self._blocks += seal(self._recent)
        self._recent.clear()

    # -- taking ------------------------------------------------------------

    def take_nowait(self) -> Item | None:
        """Remove and return the head item (dropping, and counting, expired
        ones first); ``None`` if there is none."""
        if self._held:
            return self._take_any()
        if not self._count:
            return None
        source = self._head or (self._thaw() if self._blocks else self._recent)
        entry = source.popleft()
        now = self._clock()
        expiry = entry[2]
        if expiry and expiry <= now:
            source.appendleft(entry)  # the general path drops and counts expired ones
            entry = self._pop_live()
            if entry is None:
                return None
        else:
            self._count -= 1
            self._bytes -= len(entry[0])
            self._age = now - entry[3]
        self.log.remove()
        return _new(Item, entry)

    def _take_any(self) -> Item | None:
        """take_nowait with held items about."""
        entry, seq = self._pop_live_any()
        if entry is None:
            return None
        if seq is None:
            self.log.remove()
        else:
            self.log.remove_held(seq)
            self._forget_unique(entry)
        return _new(Item, entry[:4])

    def _forget_unique(self, item: Held) -> None:
        if item.unique is not None:
            self._uniques.pop(item.unique, None)

    def _held_first(self) -> bool:
        """Whether the earliest ready held item comes before the FIFO's head
        (in arrival order); promotes due items first."""
        if self._pending:
            self.promote_due()
        if not self._ready:
            return False
        if not self._count:
            return True
        source = self._head or (self._thaw() if self._blocks else self._recent)
        return self._ready[0][0] < source[0][3]

    def _pop_held(self) -> tuple[int, Held]:
        _, seq = heapq.heappop(self._ready)
        item = self._held.pop(seq)
        self._held_bytes -= len(item.data)
        return seq, item

    def _pop_live_any(self) -> tuple[Entry | Held | None, int | None]:
        """Remove the first unexpired item in arrival order, FIFO or held:
        ``(entry, seq)``, ``seq`` None for a FIFO item; ``(None, None)`` if
        none. Expired ones met are dropped, counted and logged."""
        now = self._clock()
        while True:
            if self._held_first():
                seq, item = self._pop_held()
                if item.expiry and item.expiry <= now:
                    self._expired += 1
                    self.log.remove_held(seq)
                    self._forget_unique(item)
                    continue
                self._age = now - item.added
                return item, seq
            if not self._count:
                return None, None
            entry = self._pop_unexpired(now)
            if entry is not None:
                return entry, None

    def peek_nowait(self) -> Item | None:
        """The head item, left in place (expired heads are dropped first)."""
        now = self._clock()
        while self._held and self._held_first():
            item = self._held[self._ready[0][1]]
            if not item.expiry or item.expiry > now:
                return _new(Item, item[:4])
            seq, item = self._pop_held()
            self._expired += 1
            self.log.remove_held(seq)
            self._forget_unique(item)
        while self._count:
            source = self._head or (self._thaw() if self._blocks else self._recent)
            entry = source[0]
            if not entry[2] or entry[2] > now:
                return _new(Item, entry)
            self._pop_entry()
            self._expired += 1
            self.log.remove()
        return None

    def open_nowait(self, owner: Owner) -> Item | None:
        """Reliable read: remove the head item and keep it aside as
        ``owner``'s open item until :meth:`close_open` or :meth:`abort_open`.
        One open item per owner (``ValueError`` for a second)."""
        if owner in self._open:
            raise ValueError("this owner already holds an open item on this queue")
        seq = None
        if self._held:
            entry, seq = self._pop_live_any()
        else:
            entry = self._pop_live()
        if entry is None:
            return None
        item = _new(Item, entry[:4])
        xid = self._next_xid
        self._next_xid = (xid + 1) % _XID_LIMIT or 1
        self._open[owner] = (xid, item)
        if seq is None:
            self.log.open(xid)
        else:
            self._open_held[owner] = (seq, entry)
            self.log.open_held(xid, seq)
        return item

    def has_open(self, owner: Owner) -> bool:
        """Whether ``owner`` holds an open item here."""
        return owner in self._open

    def close_open(self, owner: Owner) -> bool:
        """Confirm ``owner``'s open item: it is gone for good. False if none."""
        entry = self._open.pop(owner, None)
        if entry is None:
            return False
        if self._open_held:
            held = self._open_held.pop(owner, None)
            if held is not None:
                self._forget_unique(held[1])
        self.log.close(entry[0])
        return True

    def abort_open(self, owner: Owner) -> bool:
        """Put ``owner``'s open item back at the head. False if none."""
        entry = self._open.pop(owner, None)
        if entry is None:
            return False
        xid, item = entry
        held = self._open_held.pop(owner, None) if self._open_held else None
        if held is None:
            self._head.appendleft(item)
            self._count += 1
            self._bytes += len(item.data)
        else:  # held again under its number: ready at once, in its arrival place
            seq, item = held
            self._held[seq] = item
            self._held_bytes += len(item.data)
            heapq.heappush(self._ready, (item.added, seq))
        self.log.abort(xid)
        if self.waiters:
            wake_one(self.waiters)
        return True

    def flush(self) -> None:
        """Drop every waiting item, delayed ones too (open items stay)."""
        if not self._count and not self._held:
            return
        self._drop_waiting()
        self.log.flush()

    def drop_all(self) -> None:
        """Forget every item, waiting and open, without logging (the queue is
        being deleted; its readers are woken to find nothing)."""
        self._drop_waiting()
        self._open.clear()
        self._open_held.clear()
        self._uniques.clear()
        wake_all(self.waiters)

    # -- looking -----------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No item waiting and none open: the queue needs nothing of its past."""
        return not self._count and not self._open and not self._held

    def live_size(self) -> tuple[int, int]:
        """``(items, data bytes)`` the queue holds, open and held items included."""
        return (self._count + len(self._open) + len(self._held),
                self._bytes + self._held_bytes
                + sum(len(item.data) for _, item in self._open.values()))

    def snapshot(self) -> tuple[list[tuple[int, Item]], list, list[tuple[int, Held, int]]]:
        """The queue's contents in a form later changes cannot touch (blocks
        are never changed, only dropped): the open FIFO items as ``(xid,
        item)`` in the order they were handed out, the waiting entries (item
        tuples and :class:`ItemRun` blocks) in queue order, and the held
        items as ``(seq, item, xid)`` (``xid`` 0 unless open)."""
        open_held = self._open_held
        opened = sorted((entry for owner, entry in self._open.items() if owner not in open_held),
                        key=lambda entry: entry[0])
        held = [(seq, item, 0) for seq, item in self._held.items()]
        held += [(seq, item, self._open[owner][0]) for owner, (seq, item) in open_held.items()]
        return opened, [*self._head, *self._blocks, *self._recent], held

    def statistics(self, logsize: int = 0) -> QueueStatistics:
        """The queue's counters now; ``logsize`` is what its store keeps on disk."""
        ready = len(self)  # (promotes the held items that fell due)
        added = None  # when the oldest waiting item arrived
        if self._count:
            if self._head:
                added = self._head[0][3]
            elif self._blocks:
                added = self._blocks[0].time_steps()[1][0]
            else:
                added = self._recent[0][3]
        if self._ready and (added is None or self._ready[0][0] < added):
            added = self._ready[0][0]
        oldest = 0 if added is None else max(0, int((self._clock() - added) * 1000))
        return QueueStatistics(
            items=ready, total_items=self._total, logsize=logsize,
            expired_items=self._expired, age_ms=int(self._age * 1000),
            bytes=self._bytes + self._held_bytes, open_transactions=len(self._open),
            waiters=len(self.waiters), delayed_items=len(self._pending), oldest_age_ms=oldest)

    # -- internals ---------------------------------------------------------

    def _thaw(self) -> deque[Entry]:
        """Move the first block into ``_head`` as tuples; return ``_head``."""
        head = self._head
        head += thaw(self._blocks.popleft())
        return head

    def _pop_entry(self) -> Entry:
        """Remove the head item (not logged, no expiry check)."""
        source = self._head or (self._thaw() if self._blocks else self._recent)
        entry = source.popleft()
        self._count -= 1
        self._bytes -= len(entry[0])
        return entry

    def _pop_live(self) -> Entry | None:
        """Remove the first unexpired item, logging the expired ones dropped."""
        now = self._clock()
        while self._count:
            entry = self._pop_unexpired(now)
            if entry is not None:
                return entry
        return None

    def _pop_unexpired(self, now: float) -> Entry | None:
        """Remove the FIFO's head item; None if it had expired (then counted
        and logged)."""
        entry = self._pop_entry()
        if entry[2] and entry[2] <= now:
            self._expired += 1
            self.log.remove()
            return None
        self._age = now - entry[3]
        return entry

    def _drop_waiting(self) -> None:
        self._head.clear()
        self._blocks.clear()
        self._recent.clear()
        self._count = 0
        self._bytes = 0
        for item in self._held.values():
            self._forget_unique(item)
        self._held.clear()
        self._pending.clear()
        self._ready.clear()
        self._held_bytes = 0
