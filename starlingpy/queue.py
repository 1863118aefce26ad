"""One persistent queue: its items, expiry, limits, open (reliable-read)
items and waiters, with every change recorded in its journal.

Changes are buffered as journal records (:class:`~starlingpy.journal.codec.RecordBuffer`)
and written by :meth:`QueueCollection.write_pending
<starlingpy.collection.QueueCollection.write_pending>` before any reply goes
out. No method here blocks or formats wire bytes.

Waiting items, oldest first, are ``_head`` + ``_blocks`` + ``_recent``:

* ``_recent``: items put since the last seal, as ``(data, flags, expiry,
  added)`` tuples (the cheapest thing to append, and to pop when the queue
  is short, which is most of the time);
* ``_blocks``: compact :class:`~starlingpy.journal.replay.ItemRun` blocks
  (one joined bytes object and a few array columns, a handful of bytes per
  item over its data). ``_recent`` is sealed into blocks, at C speed, once
  it holds ``SEAL_ITEMS`` items; replay recovers items as blocks too;
* ``_head``: tuples again, for the items at the very front: a block is
  thawed back into tuples (at C speed, whole) when it reaches the front,
  and items put back by an abort go here.

So a long queue costs its data plus a few bytes per item, and an item is an
:class:`Item` only once it is handed out.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, islice, repeat
from operator import le, sub
from typing import NamedTuple

import trio

from .journal.codec import (
    ABORT,
    ADD,
    CLOSE,
    FLUSH,
    MAX_FRAME_DATA,
    OPEN,
    REMOVE_RECORD,
    RecordBuffer,
    encode_file_header,
    encode_frame,
    little_endian,
)
from .journal.file import BACKGROUND_TEMP_SUFFIX, Failpoint, JournalFile, TempJournal
from .journal.replay import RUN_BYTES, ItemRun, Recovered

log = logging.getLogger("starlingpy.journal")

MAX_RELATIVE_EXPTIME = 2_592_000  # 30 days: memcache's line between relative and absolute
_XID_LIMIT = 1 << 32
_MAX_FLAGS = (1 << 32) - 1
_SNAPSHOT_FRAME_ITEMS = 4096
_SNAPSHOT_ADDED_SPREAD = 1.0  # seconds of enqueue times one snapshot frame may merge
SEAL_ITEMS = 4096  # recent items kept as tuples before they are sealed into blocks


class Item(NamedTuple):
    """One queued item. ``expiry`` and ``added`` are unix times (``expiry`` 0: never)."""
    data: bytes
    flags: int
    expiry: float
    added: float


# An Item from a ready (data, flags, expiry, added) tuple, without the
# Python-level __new__ of NamedTuple (a third of its cost).
_new = tuple.__new__
Entry = tuple  # (data, flags, expiry, added): a waiting item as the deques hold it


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
        self._head: deque[Entry] = deque()
        self._blocks: deque[ItemRun] = deque()
        self._recent: deque[Entry] = deque()
        self._count = 0
        self._bytes = 0
        self._total = 0
        self._expired = 0
        self._age = 0.0
        self._open: dict[object, tuple[int, Item]] = {}
        self._next_xid = 1
        # Parked readers (an insertion-ordered dict used as a set: the
        # longest parked is woken first). Shared with the collection.
        self._waiters: dict[trio.Event, None] = {}
        self._pending = RecordBuffer()
        self._dirty = False
        self._frames = 0  # frames in the journal file: many small ones make replay slow
        self._deleted = False
        self._written_since_rewrite = 0  # bytes appended since the journal was last rewritten
        self._rewriting = False
        self._carry: list[bytes] | None = None  # frames to carry over to a rewrite in flight
        self._has_caps = limits.max_items is not None or limits.max_bytes is not None

    def _restore(self, state: Recovered) -> None:
        """Take on what a replay of this (new, empty) queue's journal
        produced. Transactions that were open when the journal ended are
        back at the head (and journaled so)."""
        for entry in state.entries:
            if entry.__class__ is ItemRun:
                self._blocks.append(entry)
            elif self._blocks:  # (replay puts single items first; stay in order anyway)
                self._blocks += _seal([entry])
            else:
                self._head.append(entry)
        self._count = state.items
        self._bytes = state.bytes
        self._next_xid = state.next_xid % _XID_LIMIT or 1
        self._frames = state.frames
        self._written_since_rewrite = self._journal.size
        for xid in reversed(state.reopened):
            self._pending.op(ABORT, xid)
        if state.reopened:
            self._dirtied()

    # -- adding ------------------------------------------------------------

    def put(self, data: bytes, flags: int, exptime: int) -> bool:
        """Enqueue ``data``. ``exptime`` as memcache has it: 0 never expires,
        up to 30 days is relative seconds, more is an absolute unix time, a
        negative one is already expired (counted, not kept, still True).

        False when the item is larger than ``max_item_size``, or the queue is
        full and not ``discard_old`` (the caller answers ``NOT_STORED``).
        ``ValueError`` if ``flags`` does not fit in 32 bits.
        """
        if not 0 <= flags <= _MAX_FLAGS:
            raise ValueError(f"flags must fit in 32 bits, not {flags}")
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
        recent = self._recent
        recent.append((data, flags, expiry, now))
        self._count += 1
        self._bytes += size
        self._total += 1
        pending = self._pending  # RecordBuffer.add, inlined: this is the hot path
        if pending.added is None:
            pending.added = now
        pending.records.append((ADD, flags, data, expiry))
        if not self._dirty:
            self._dirty = True
            self._on_dirty(self)
        if len(recent) >= SEAL_ITEMS:
            self._seal_recent()
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
            self._pending.records.append(REMOVE_RECORD)
        return True

    def _seal_recent(self) -> None:
        """Turn the recent items into compact blocks (order unchanged)."""
        self._blocks += _seal(self._recent)
        self._recent.clear()

    def _append_loaded(self, data: bytes, flags: int, expiry: float, added: float) -> None:
        """Append an item whose journal record is already written (an import)."""
        self._recent.append((data, flags, expiry, added))
        self._count += 1
        self._bytes += len(data)
        if len(self._recent) >= SEAL_ITEMS:
            self._seal_recent()

    # -- taking ------------------------------------------------------------

    def take_nowait(self) -> Item | None:
        """Remove and return the head item (dropping, and counting, expired
        ones first); ``None`` if there is none."""
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
        self._pending.records.append(REMOVE_RECORD)
        if not self._dirty:
            self._dirty = True
            self._on_dirty(self)
        if not self._count:
            self._cut_if_empty()
        return _new(Item, entry)

    def peek_nowait(self) -> Item | None:
        """The head item, left in place (expired heads are dropped first)."""
        now = self._clock()
        while self._count:
            source = self._head or (self._thaw() if self._blocks else self._recent)
            entry = source[0]
            if not entry[2] or entry[2] > now:
                return _new(Item, entry)
            self._pop_entry()
            self._expired += 1
            self._pending.records.append(REMOVE_RECORD)
            self._after_removal()
        return None

    def open_nowait(self, owner: object) -> Item | None:
        """Reliable read: remove the head item and keep it aside as
        ``owner``'s open item until :meth:`close_open` or :meth:`abort_open`.
        One open item per owner (``ValueError`` for a second)."""
        if owner in self._open:
            raise ValueError("this owner already holds an open item on this queue")
        entry = self._pop_live()
        if entry is None:
            return None
        item = _new(Item, entry)
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
        self._head.appendleft(item)
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
        self._drop_waiting()
        self._pending.op(FLUSH)
        self._after_removal()

    def statistics(self) -> QueueStatistics:
        """The queue's counters now."""
        return QueueStatistics(
            items=self._count, total_items=self._total, logsize=self._journal.size,
            expired_items=self._expired, age_ms=int(self._age * 1000), bytes=self._bytes,
            open_transactions=len(self._open), waiters=len(self._waiters))

    # -- internals ---------------------------------------------------------

    def _thaw(self) -> deque[Entry]:
        """Move the first block into ``_head`` as tuples; return ``_head``."""
        head = self._head
        head += _thaw(self._blocks.popleft())
        return head

    def _pop_entry(self) -> Entry:
        """Remove the head item (no journal record, no expiry check)."""
        source = self._head or (self._thaw() if self._blocks else self._recent)
        entry = source.popleft()
        self._count -= 1
        self._bytes -= len(entry[0])
        return entry

    def _pop_live(self) -> Entry | None:
        """Remove the first unexpired item, journaling the expired ones dropped."""
        if not self._count:
            return None
        now = self._clock()
        while self._count:
            entry = self._pop_entry()
            if entry[2] and entry[2] <= now:
                self._expired += 1
                self._pending.records.append(REMOVE_RECORD)
                continue
            self._age = now - entry[3]
            return entry
        self._after_removal()
        return None

    def _drop_waiting(self) -> None:
        self._head.clear()
        self._blocks.clear()
        self._recent.clear()
        self._count = 0
        self._bytes = 0

    def _after_removal(self) -> None:
        self._dirtied()
        if not self._count:
            self._cut_if_empty()

    def _cut_if_empty(self) -> None:
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
        """Wake one parked reader not woken already: one per item put. A
        reader that then takes nothing here passes the wake on (see
        :meth:`QueueCollection.wait_for_put
        <starlingpy.collection.QueueCollection.wait_for_put>`)."""
        for event in self._waiters:
            if not event.is_set():
                event.set()
                return

    def _wake_all(self) -> None:
        for event in self._waiters:
            event.set()

    # -- used by the collection --------------------------------------------

    def _write_pending(self) -> bool:
        """Append the buffered records to the journal; True if anything was written."""
        pending = self._pending
        if not pending.records or self._deleted:
            self._dirty = False
            pending.clear()
            return False
        chunks = pending.encode()
        journal = self._journal
        before = journal.size
        journal.append(chunks)  # on OSError: still dirty, retried
        self._dirty = False
        pending.clear()
        self._frames += 1
        self._written_since_rewrite += journal.size - before
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
        self._journal.rewrite(encode_file_header(self.name), chunks, failpoint)
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

    def _capture(self) -> tuple[list, list]:
        """The state to rebuild, in a form that later changes cannot touch
        (blocks are never changed, only dropped): open items and waiting
        entries."""
        opened = sorted(self._open.values(), key=lambda entry: entry[0])
        return opened, [*self._head, *self._blocks, *self._recent]


def _write_temp(journal: JournalFile, header: bytes, state: tuple) -> tuple[TempJournal, int]:
    chunks = _encode_state(*state)
    temp = journal.start_rewrite(header, chunks, suffix=BACKGROUND_TEMP_SUFFIX)
    return temp, len(chunks) // 2


def _encode_state(opened: list, entries: list) -> list[bytes]:
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
    loose: list[Entry] = []
    for entry in entries:
        if entry.__class__ is ItemRun:
            chunks += _encode_items(loose)
            loose = []
            chunks += _encode_run(entry)
        else:
            loose.append(entry)
    chunks += _encode_items(loose)
    return chunks


def _encode_items(items: list[Entry]) -> list[bytes]:
    """Item tuples as ADD frames of up to ``_SNAPSHOT_FRAME_ITEMS`` items and
    ``MAX_FRAME_DATA`` bytes (or one larger item), column by column; a frame
    is split where enqueue times spread too far."""
    chunks: list[bytes] = []
    start = 0
    while start < len(items):
        data, flags, expiries, added = zip(*items[start:start + _SNAPSHOT_FRAME_ITEMS])
        cut = len(data)
        if max(added) - min(added) > _SNAPSHOT_ADDED_SPREAD:
            cut = next(i for i, t in enumerate(added) if abs(t - added[0]) > _SNAPSHOT_ADDED_SPREAD)
        lengths = array("I", map(len, data[:cut]))
        size = sum(lengths)
        if size > MAX_FRAME_DATA:
            cut = max(1, bisect_right(list(accumulate(lengths)), MAX_FRAME_DATA))
            lengths = lengths[:cut]
            size = sum(lengths)
        chunks += encode_frame(cut, bytes(cut), little_endian(array("I", flags[:cut])),
                               little_endian(lengths), little_endian(array("d", expiries[:cut])),
                               list(data[:cut]), size, added[0])
        start += cut
    return chunks


def _seal(entries: Iterable[Entry]) -> list[ItemRun]:
    """Item tuples as blocks of ``RUN_BYTES`` at most (or of one item, if
    larger), so memory comes back block by block as the queue drains."""
    data, flags, expiries, added = zip(*entries)
    lengths = array("I", map(len, data))
    ends = list(accumulate(lengths))
    runs: list[ItemRun] = []
    start = 0
    while start < len(data):
        limit = (ends[start - 1] if start else 0) + RUN_BYTES
        stop = max(start + 1, bisect_right(ends, limit, start))
        part_flags, part_expiries = flags[start:stop], expiries[start:stop]
        runs.append(ItemRun(b"".join(data[start:stop]), lengths[start:stop],
                            array("I", part_flags) if any(part_flags) else None,
                            array("d", part_expiries) if any(part_expiries) else None,
                            None, array("d", added[start:stop])))
        start = stop
    return runs


def _thaw(run: ItemRun) -> Iterator[Entry]:
    """A block's items as tuples, built at C speed (no Python loop per item)."""
    offsets = list(accumulate(run.lengths, initial=0))
    data = map(run.data.__getitem__, map(slice, offsets, offsets[1:]))
    flags = run.flags if run.flags is not None else repeat(0)
    expiries = run.expiries if run.expiries is not None else repeat(0.0)
    starts, times = run.time_steps()
    if run.starts is not None:  # one time per frame: repeat it for the frame's items
        counts = map(sub, [*starts[1:], len(run.lengths)], starts)
        times = chain.from_iterable(map(repeat, times, counts))
    return zip(data, flags, expiries, times)


def _frame_cuts(starts: Sequence[int], steps: Sequence[float]) -> tuple[list[int], list[float]]:
    """Where a block's items are cut into frames (``starts[k]`` onwards were
    added at ``steps[k]``): a new frame wherever the enqueue time moves more
    than ``_SNAPSHOT_ADDED_SPREAD`` from the frame's own. Returns the first
    item of each frame and its time."""
    cuts, times = [0], [steps[0]]
    if all(map(le, steps, islice(steps, 1, None))):  # in order (the usual case): bisect
        k = 0
        while (k := bisect_right(steps, steps[k] + _SNAPSHOT_ADDED_SPREAD, k)) < len(steps):
            cuts.append(starts[k])
            times.append(steps[k])
        return cuts, times
    for k in range(1, len(steps)):  # the clock went back at some point
        if abs(steps[k] - times[-1]) > _SNAPSHOT_ADDED_SPREAD:
            cuts.append(starts[k])
            times.append(steps[k])
    return cuts, times


def _encode_run(run: ItemRun) -> list[bytes]:
    """A block as frames, without a Python object per item: one frame per
    stretch of items whose enqueue times are close."""
    count = len(run.lengths)
    cuts, times = _frame_cuts(*run.time_steps())
    cuts.append(count)
    flags = run.flags if run.flags is not None else array("I", bytes(4 * count))
    expiries = run.expiries if run.expiries is not None else array("d", bytes(8 * count))
    chunks: list[bytes] = []
    at = 0
    for a, b, added in zip(cuts, cuts[1:], times):
        lengths = run.lengths[a:b]
        size = sum(lengths)
        chunks += encode_frame(b - a, bytes(b - a), little_endian(flags[a:b]),
                               little_endian(lengths), little_endian(expiries[a:b]),
                               [run.data[at:at + size]], size, added)
        at += size
    return chunks
