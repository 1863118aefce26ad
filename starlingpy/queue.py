"""One persistent queue: its items, expiry, limits, open (reliable-read)
items and waiters, with every change recorded in its journal.

Changes are buffered as journal records (:class:`~starlingpy.journal.codec.RecordBuffer`)
and written by :meth:`QueueCollection.write_pending
<starlingpy.collection.QueueCollection.write_pending>` before any reply goes
out. No method here blocks or formats wire bytes.

Waiting items live in one deque, oldest first. Items added at run time are
:class:`Item` objects; items recovered from the journal at start-up stay in
compact :class:`~starlingpy.journal.replay.ItemRun` blocks and become
``Item`` objects only when taken.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .journal.codec import (
    ABORT,
    CLOSE,
    FLUSH,
    OPEN,
    REMOVE,
    RecordBuffer,
    encode_file_header,
    encode_frame,
    little_endian,
)
from .journal.file import BACKGROUND_TEMP_SUFFIX, Failpoint, JournalFile, TempJournal
from .journal.replay import ItemRun, Recovered

log = logging.getLogger("starlingpy.journal")

MAX_RELATIVE_EXPTIME = 2_592_000  # 30 days: memcache's line between relative and absolute
_XID_LIMIT = 1 << 32
_SNAPSHOT_FRAME_ITEMS = 4096
_SNAPSHOT_ADDED_SPREAD = 1.0  # seconds of enqueue times one snapshot frame may merge


@dataclass(frozen=True, slots=True)
class Item:
    """One queued item. ``expiry`` and ``added`` are unix times (``expiry`` 0: never)."""
    data: bytes
    flags: int
    expiry: float
    added: float


@dataclass(frozen=True)
class QueueLimits:
    """Per-queue limits; ``None`` means unlimited."""
    max_items: int | None = None
    max_bytes: int | None = None
    max_item_size: int | None = None
    max_age: float | None = None  # seconds; caps every item's expiry
    discard_old: bool = False  # full queue: drop oldest instead of refusing


@dataclass(frozen=True)
class QueueStatistics:
    """A queue's counters at one moment (the ``queue_<name>_*`` stats)."""
    items: int
    total_items: int
    logsize: int
    expired_items: int
    age_ms: int
    bytes: int
    open_transactions: int
    waiters: int


class PersistentQueue:
    """A FIFO queue of :class:`Item` backed by a journal.

    Made by :class:`~starlingpy.collection.QueueCollection`; use its
    ``get_or_create``. Single-threaded (one trio thread), no locks.
    """

    def __init__(self, name: bytes, journal: JournalFile, limits: QueueLimits,
                 clock: Callable[[], float], on_dirty: Callable[[PersistentQueue], None],
                 max_journal_size: int) -> None:
        self.name = name
        self.limits = limits
        self._journal = journal
        self._clock = clock
        self._on_dirty = on_dirty
        self._max_journal_size = max_journal_size
        self._items: deque = deque()
        self._count = 0
        self._bytes = 0
        self._total = 0
        self._expired = 0
        self._age = 0.0
        self._open: dict[object, tuple[int, Item]] = {}
        self._next_xid = 1
        self._waiters: set[trio.Event] = set()
        self._pending = RecordBuffer()
        self._dirty = False
        self._frames = 0  # frames in the journal file: many small ones make replay slow
        self._deleted = False
        self._written_since_rewrite = 0  # bytes appended since the journal was last rewritten
        self._rewriting = False
        self._runs = 0  # recovered ItemRun blocks still in the deque
        self._carry: list[bytes] | None = None  # frames to carry over to a rewrite in flight
        self._has_caps = limits.max_items is not None or limits.max_bytes is not None

    @classmethod
    def recovered(cls, name: bytes, journal: JournalFile, state: Recovered, limits: QueueLimits,
                  clock: Callable[[], float], on_dirty: Callable[[PersistentQueue], None],
                  max_journal_size: int) -> PersistentQueue:
        """The queue a journal replay produced. Transactions that were open
        when the journal ended are back at the head (and journaled so)."""
        queue = cls(name, journal, limits, clock, on_dirty, max_journal_size)
        queue._items.extend(Item(*e) if type(e) is tuple else e for e in state.entries)
        queue._runs = sum(type(e) is ItemRun for e in state.entries)
        queue._count = state.items
        queue._bytes = state.bytes
        queue._next_xid = state.next_xid % _XID_LIMIT or 1
        queue._frames = state.frames
        queue._written_since_rewrite = journal.size
        for xid in reversed(state.reopened):
            queue._pending.op(ABORT, xid)
        if state.reopened:
            queue._dirtied()
        return queue

    # -- adding ------------------------------------------------------------

    def put(self, data: bytes, flags: int, exptime: int) -> bool:
        """Enqueue ``data``. ``exptime`` as memcache has it: 0 never expires,
        up to 30 days is relative seconds, more is an absolute unix time, a
        negative one is already expired (counted, not kept, still True).

        False when the item is larger than ``max_item_size``, or the queue is
        full and not ``discard_old`` (the caller answers ``NOT_STORED``).
        """
        limits = self.limits
        size = len(data)
        if limits.max_item_size is not None and size > limits.max_item_size:
            return False
        now = self._clock()
        if exptime == 0:
            expiry = 0.0
        elif exptime < 0:
            expiry = -1.0
        elif exptime <= MAX_RELATIVE_EXPTIME:
            expiry = now + exptime
        else:
            expiry = float(exptime)
        if limits.max_age is not None and (expiry == 0.0 or expiry > now + limits.max_age):
            expiry = now + limits.max_age
        if expiry and expiry <= now:
            self._total += 1
            self._expired += 1
            return True
        if self._has_caps and not self._make_room(size):
            return False
        self._items.append(Item(data, flags, expiry, now))
        self._count += 1
        self._bytes += size
        self._total += 1
        self._pending.add(data, flags, expiry, now)
        if not self._dirty:
            self._dirtied()
        if self._waiters:
            self._wake()
        return True

    def _make_room(self, size: int) -> bool:
        limits = self.limits
        if limits.max_items == 0 or (limits.max_bytes is not None and size > limits.max_bytes):
            return False  # could never fit: refuse before discarding anything
        while ((limits.max_items is not None and self._count >= limits.max_items)
               or (limits.max_bytes is not None and self._bytes + size > limits.max_bytes)):
            if not limits.discard_old or not self._count:
                return False
            self._pop_entry()
            self._pending.op(REMOVE)
        return True

    # -- taking ------------------------------------------------------------

    def take_nowait(self) -> Item | None:
        """Remove and return the head item (dropping, and counting, expired
        ones first); ``None`` if there is none."""
        item = self._pop_live()
        if item is None:
            return None
        self._pending.op(REMOVE)
        self._after_removal()
        return item

    def peek_nowait(self) -> Item | None:
        """The head item, left in place (expired heads are dropped first)."""
        now = self._clock()
        items = self._items
        while items:
            head = items[0]
            item = _run_item(head) if head.__class__ is ItemRun else head
            if not item.expiry or item.expiry > now:
                return item
            self._pop_entry()
            self._expired += 1
            self._pending.op(REMOVE)
            self._after_removal()
        return None

    def open_nowait(self, owner: object) -> Item | None:
        """Reliable read: remove the head item and keep it aside as
        ``owner``'s open item until :meth:`close_open` or :meth:`abort_open`.
        One open item per owner (``ValueError`` for a second)."""
        if owner in self._open:
            raise ValueError("this owner already holds an open item on this queue")
        item = self._pop_live()
        if item is None:
            return None
        xid = self._next_xid
        self._next_xid = (xid + 1) % _XID_LIMIT or 1
        self._open[owner] = (xid, item)
        self._pending.op(OPEN, xid)
        self._dirtied()
        return item

    def has_open(self, owner: object) -> bool:
        """Whether ``owner`` holds an open item here."""
        return owner in self._open

    def close_open(self, owner: object) -> bool:
        """Confirm ``owner``'s open item: it is gone for good. False if none."""
        entry = self._open.pop(owner, None)
        if entry is None:
            return False
        self._pending.op(CLOSE, entry[0])
        self._after_removal()
        return True

    def abort_open(self, owner: object) -> bool:
        """Put ``owner``'s open item back at the head. False if none."""
        entry = self._open.pop(owner, None)
        if entry is None:
            return False
        xid, item = entry
        self._items.appendleft(item)
        self._count += 1
        self._bytes += len(item.data)
        self._pending.op(ABORT, xid)
        self._dirtied()
        if self._waiters:
            self._wake()
        return True

    def release_owner(self, owner: object) -> None:
        """The owner (a connection) is gone: its open item goes back."""
        self.abort_open(owner)

    def flush(self) -> None:
        """Drop every waiting item (open items stay open)."""
        if not self._count:
            return
        self._items.clear()
        self._runs = 0
        self._count = 0
        self._bytes = 0
        self._pending.op(FLUSH)
        self._after_removal()

    def statistics(self) -> QueueStatistics:
        """The queue's counters now."""
        return QueueStatistics(
            items=self._count, total_items=self._total, logsize=self._journal.size,
            expired_items=self._expired, age_ms=int(self._age * 1000), bytes=self._bytes,
            open_transactions=len(self._open), waiters=len(self._waiters))

    # -- internals ---------------------------------------------------------

    def _pop_entry(self) -> Item:
        """Remove the head item (no journal record, no expiry check)."""
        items = self._items
        head = items[0]
        if head.__class__ is ItemRun:
            item = _run_item(head)
            head.index += 1
            head.offset += len(item.data)
            if head.index == len(head.lengths):
                items.popleft()
                self._runs -= 1
        else:
            items.popleft()
            item = head
        self._count -= 1
        self._bytes -= len(item.data)
        return item

    def _pop_live(self) -> Item | None:
        """Remove the first unexpired item, journaling the expired ones dropped."""
        if not self._count:
            return None
        now = self._clock()
        while self._count:
            item = self._pop_entry()
            if item.expiry and item.expiry <= now:
                self._expired += 1
                self._pending.op(REMOVE)
                continue
            self._age = now - item.added
            return item
        self._after_removal()
        return None

    def _after_removal(self) -> None:
        if not self._dirty:
            self._dirtied()
        # An empty queue needs none of its journal: cut it back to the header.
        if (not self._count and not self._open and self._journal.size > self._max_journal_size
                and not self._deleted and not self._rewriting):
            self._pending.clear()
            self._journal.truncate()
            self._rewritten(0)

    def _dirtied(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._on_dirty(self)

    def _wake(self) -> None:
        for event in self._waiters:
            event.set()

    # -- used by the collection --------------------------------------------

    def _write_pending(self) -> bool:
        """Append the buffered records to the journal; True if anything was written."""
        if not self._pending or self._deleted:
            self._dirty = False
            self._pending.clear()
            return False
        chunks = self._pending.encode()
        before = self._journal.size
        self._journal.append(chunks)  # on OSError: still dirty, retried
        self._dirty = False
        self._pending.clear()
        self._frames += 1
        self._written_since_rewrite += self._journal.size - before
        if self._carry is not None:  # a background rewrite needs these too
            self._carry += chunks
        return True

    def _live_bytes(self) -> int:
        return self._bytes + sum(len(item.data) for _, item in self._open.values())

    def _wants_rewrite(self, fragmented_frames: float) -> bool:
        """Most of a large journal is dead, or it is made of so many small
        frames that replay would crawl (and enough has been written since the
        last rewrite to pay for this one: at most 2x write amplification)."""
        if self._rewriting:
            return False
        size = self._journal.size
        items = self._count + len(self._open)
        live = self._live_bytes() + 17 * items
        if size > self._max_journal_size and live * 4 < size:
            return True
        return (self._frames > fragmented_frames and self._frames * 256 > items
                and self._written_since_rewrite >= live)

    def _rewrite(self, failpoint: Failpoint | None = None) -> None:
        """Replace the journal, now, with one holding only the live items
        (the buffered records are written first)."""
        self._write_pending()
        chunks = _encode_state(*self._capture())
        header = encode_file_header(self.name)
        if failpoint is None:
            self._journal.rewrite(header, chunks)
        else:
            self._journal.rewrite(header, chunks, failpoint)
        self._rewritten(len(chunks) // 2)

    async def _rewrite_in_background(self) -> None:
        """Replace the journal with the live items without stalling the
        loop: the new file is encoded, written and fsynced in a worker
        thread; frames appended meanwhile are carried over to it before it
        is renamed into place."""
        self._write_pending()
        state = self._capture()
        header = encode_file_header(self.name)
        journal = self._journal
        self._rewriting = True
        self._carry = carry = []
        try:
            temp, frames = await trio.to_thread.run_sync(_write_temp, journal, header, state)
        finally:
            self._carry = None
            self._rewriting = False
        if self._deleted or journal.fd is None or journal is not self._journal:
            temp.discard()
            return
        journal.finish_rewrite(temp, carry)
        self._rewritten(frames + len(carry) // 2)

    def _rewritten(self, frames: int) -> None:
        self._frames = frames
        self._written_since_rewrite = 0

    def _capture(self) -> tuple[list, list, dict]:
        """The state to rebuild, in a form that later changes cannot touch:
        open items, waiting entries, and where each recovered block stood."""
        opened = sorted(self._open.values(), key=lambda entry: entry[0])
        entries = list(self._items)
        marks = ({id(e): (e.index, e.offset) for e in entries if e.__class__ is ItemRun}
                 if self._runs else {})
        return opened, entries, marks


def _write_temp(journal: JournalFile, header: bytes, state: tuple) -> tuple[TempJournal, int]:
    chunks = _encode_state(*state)
    temp = journal.start_rewrite(header, chunks, suffix=BACKGROUND_TEMP_SUFFIX)
    return temp, len(chunks) // 2


def _encode_state(opened: list, entries: list, marks: dict) -> list[bytes]:
    """Frames that rebuild a captured state: open items (added, then opened
    again under their transaction ids), then the waiting items."""
    chunks: list[bytes] = []
    if opened:
        batch = RecordBuffer()
        for _, item in opened:
            batch.add(item.data, item.flags, item.expiry, item.added)
        for xid, _ in opened:
            batch.op(OPEN, xid)
        chunks += batch.encode()
    if not marks:  # no recovered blocks: every entry is an Item
        return chunks + _encode_items(entries)
    items: list[Item] = []
    for entry in entries:
        if entry.__class__ is ItemRun:
            chunks += _encode_items(items)
            items = []
            chunks += _encode_run(entry, *marks[id(entry)])
        else:
            items.append(entry)
    chunks += _encode_items(items)
    return chunks


def _encode_items(items: list[Item]) -> list[bytes]:
    """Items as ADD frames of up to ``_SNAPSHOT_FRAME_ITEMS``, column by
    column; a frame is split where enqueue times spread too far."""
    chunks: list[bytes] = []
    start = 0
    while start < len(items):
        part = items[start:start + _SNAPSHOT_FRAME_ITEMS]
        added = [item.added for item in part]
        if max(added) - min(added) > _SNAPSHOT_ADDED_SPREAD:
            cut = next(i for i, t in enumerate(added) if abs(t - added[0]) > _SNAPSHOT_ADDED_SPREAD)
            part, added = part[:cut], added[:cut]
        data = [item.data for item in part]
        lengths = array("I", map(len, data))
        chunks += encode_frame(len(part), bytes(len(part)),
                               little_endian(array("I", [item.flags for item in part])),
                               little_endian(lengths),
                               little_endian(array("d", [item.expiry for item in part])),
                               data, sum(lengths), added[0])
        start += len(part)
    return chunks


def _run_item(run: ItemRun) -> Item:
    i, at = run.index, run.offset
    return Item(run.data[at:at + run.lengths[i]],
                run.flags[i] if run.flags is not None else 0,
                run.expiries[i] if run.expiries is not None else 0.0,
                run.times[bisect_right(run.starts, i) - 1])


def _encode_run(run: ItemRun, start: int, offset: int) -> list[bytes]:
    """A recovered block (from item ``start``, whose data is at ``offset``)
    as frames, without making an Item per item: one frame per stretch of
    items whose enqueue times are close."""
    stop = len(run.lengths)
    if start >= stop:
        return []
    first = bisect_right(run.starts, start) - 1
    cuts, times = [start], [run.times[first]]
    for k in range(first + 1, len(run.starts)):
        if abs(run.times[k] - times[-1]) > _SNAPSHOT_ADDED_SPREAD:
            cuts.append(run.starts[k])
            times.append(run.times[k])
    cuts.append(stop)
    args, lengths, expiries, data, _ = run.remaining(start, offset)
    chunks: list[bytes] = []
    at = 0
    for a, b, added in zip(cuts, cuts[1:], times):
        i, j = a - start, b - start
        size = sum(run.lengths[a:b])
        chunks += encode_frame(j - i, bytes(j - i), args[4 * i:4 * j], lengths[4 * i:4 * j],
                               expiries[8 * i:8 * j], [data[at:at + size]], size, added)
        at += size
    return chunks
