"""The journal store: queues kept in memory and made durable in one
checksummed journal file per queue, in one locked directory.

What it owns: each queue's records (buffered by a
:class:`~starlingpy.journal.codec.RecordBuffer`, written by :meth:`commit`
before any reply goes out), the sync policy and group commit, truncation of
empty queues' journals, snapshot rewrites (now, or in a worker thread while
serving), and start-up recovery (:mod:`.recovery`). The queue rules are
:mod:`starlingpy.queue`'s; what a store must guarantee is in docs/storage.md.

Error handling: :meth:`JournalStore.open` raises :class:`StartupError` (a
message for a human) when the directory cannot be used. Damaged journals are
not errors: they are cut at the last good record and logged (logger
``starlingpy.journal``). ``OSError`` while serving (a full disk) propagates
to the caller of the operation that hit it.

Resource handling: the store holds the directory lock and one file
descriptor per queue until :meth:`JournalStore.close`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..names import queue_filename
from ..queue import NO_LIMITS, Queue, QueueLimits
from ..store.interface import Pending
from ..store.local import LocalStore
from .codec import RECORD_FIXED_SIZE, RecordBuffer, encode_file_header
from .file import BACKGROUND_TEMP_SUFFIX, Failpoint, JournalFile, TempJournal
from .recovery import StartupError, load_directory, lock_directory
from .snapshot import encode_state
from .sync import GroupCommit, SyncPolicy

log = logging.getLogger("starlingpy.journal")

__all__ = ["JournalStore", "StartupError"]

COMPACT_CHECK_SECONDS = 1.0
FRAGMENTED_FRAMES = 4096  # at close, rewrite journals with more (small) frames than this
BACKGROUND_FRAGMENTED_FRAMES = 65536  # while serving, only when replay would take ~0.1 s+


class QueueJournal:
    """One queue's journal: its buffered records, their writing, truncation
    when the queue is empty, and rewrites to its live items."""

    def __init__(self, journal: JournalFile, on_dirty: Callable[[QueueJournal], None]) -> None:
        self.file = journal
        self.records = RecordBuffer(partial(on_dirty, self))
        self.queue: Queue | None = None
        self.frames = 0  # frames in the file: many small ones make replay slow
        self.written_since_rewrite = 0  # bytes appended since the last rewrite
        self.rewriting = False
        self.carry: list[bytes] | None = None  # frames to carry over to a rewrite in flight
        self.deleted = False

    def write(self, max_journal_size: int) -> bool:
        """Append the buffered records (one write); True if the file changed.
        An idle queue whose journal is past ``max_journal_size`` has it cut
        back to the header instead: it needs none of its past."""
        records = self.records
        if self.deleted:
            records.clear()
            return False
        journal = self.file
        if journal.size > max_journal_size and self.queue.idle and not self.rewriting:
            journal.truncate()
            records.clear()
            self._rewritten(0)
            return True
        if not records.records:
            return False
        chunks = records.encode()
        before = journal.size
        journal.append(chunks)  # on OSError: the records stay buffered, retried
        records.clear()
        self.frames += 1
        self.written_since_rewrite += journal.size - before
        if self.carry is not None:  # a background rewrite needs these too
            self.carry += chunks
        return True

    def wants_rewrite(self, fragmented_frames: float, max_journal_size: int) -> bool:
        """Most of a large journal is dead, or it is made of so many small
        frames that replay would crawl (and enough has been written since the
        last rewrite to pay for this one: at most 2x write amplification)."""
        if self.rewriting:
            return False
        size = self.file.size
        items, data = self.queue.live_size()
        live = data + RECORD_FIXED_SIZE * items
        if size > max_journal_size and live * 4 < size:
            return True
        return (self.frames > fragmented_frames and self.frames * 256 > items
                and self.written_since_rewrite >= live)

    def rewrite(self, failpoint: Failpoint | None = None) -> None:
        """Replace the journal, now, with one holding only the live items
        (the buffered records are written first)."""
        self.write(float("inf"))
        chunks = encode_state(*self.queue.snapshot())
        self.file.rewrite(encode_file_header(self.queue.name), chunks, failpoint)
        self._rewritten(len(chunks) // 2)

    async def rewrite_in_background(self) -> None:
        """Replace the journal with the live items without stalling the
        loop: the new file is encoded, written and fsynced in a worker
        thread; frames appended meanwhile are carried over to it before it
        is renamed into place."""
        self.write(float("inf"))
        state = self.queue.snapshot()
        header = encode_file_header(self.queue.name)
        journal = self.file
        self.rewriting = True
        self.carry = carry = []
        try:
            temp, frames = await trio.to_thread.run_sync(_write_temp, journal, header, state)
        finally:
            self.carry = None
            self.rewriting = False
        if self.deleted or journal.fd is None:
            temp.discard()
            return
        journal.finish_rewrite(temp, carry)
        self._rewritten(frames + len(carry) // 2)

    def _rewritten(self, frames: int) -> None:
        self.frames = frames
        self.written_since_rewrite = 0


def _write_temp(journal: JournalFile, header: bytes, state: tuple) -> tuple[TempJournal, int]:
    chunks = encode_state(*state)
    temp = journal.start_rewrite(header, chunks, suffix=BACKGROUND_TEMP_SUFFIX)
    return temp, len(chunks) // 2


class JournalStore(LocalStore):
    """Every queue of one directory. Use :meth:`open`; single-threaded."""

    def __init__(self, directory: Path, lock_fd: int, sync: SyncPolicy,
                 default_limits: QueueLimits, limits_by_name: Mapping[bytes, QueueLimits],
                 max_journal_size: int, clock: Callable[[], float]) -> None:
        super().__init__(default_limits=default_limits, limits_by_name=limits_by_name,
                         clock=clock)
        self.directory = directory
        self.sync = sync
        self._lock_fd: int | None = lock_fd
        self._max_journal_size = max_journal_size
        self._journals: dict[bytes, QueueJournal] = {}
        self._dirty: list[QueueJournal] = []
        self._group = GroupCommit()
        self._durable = Pending(self._group.wait_durable) if sync.mode == "always" else None

    @classmethod
    def open(cls, directory: str | Path, *, sync: SyncPolicy,
             default_limits: QueueLimits = NO_LIMITS,
             limits_by_name: Mapping[bytes, QueueLimits] = {},
             max_journal_size: int = 16 * 1024 * 1024,
             clock: Callable[[], float] = time.time) -> JournalStore:
        """Lock ``directory`` (creating it if missing) and load every journal
        in it, ours and Ruby Starling's, before returning.

        Raises :class:`StartupError` if the directory cannot be created or
        written, or another server holds it.
        """
        path = Path(directory)
        lock_fd = lock_directory(path)
        store = cls(path, lock_fd, sync, default_limits, limits_by_name, max_journal_size, clock)
        try:
            load_directory(store)
            store.commit()  # ABORTs for transactions a crash left open
            store._group.sync_now()
        except BaseException:
            store.abandon()
            raise
        return store

    # -- queues and their journals ------------------------------------------

    def _new_queue(self, name: bytes) -> Queue:
        journal = JournalFile.create(self.directory / queue_filename(name), name)
        self._group.changed_directory(self.directory)
        return self.adopt(name, journal)

    def adopt(self, name: bytes, journal: JournalFile) -> Queue:
        """Register queue ``name`` kept in ``journal`` (new, or recovered at
        start-up; recovery then restores its items)."""
        keeper = QueueJournal(journal, self._dirty.append)
        keeper.written_since_rewrite = journal.size
        queue = self._make_queue(name, keeper.records)
        keeper.queue = queue
        self._journals[name] = keeper
        return queue

    def journal_of(self, name: bytes) -> QueueJournal | None:
        return self._journals.get(name)

    def _queue_dropped(self, queue: Queue) -> None:
        keeper = self._journals.pop(queue.name)
        keeper.deleted = True
        keeper.records.clear()
        self._group.forget(keeper.file)
        keeper.file.delete()
        self._group.changed_directory(self.directory)

    def _logsize(self, queue: Queue) -> int:
        return self._journals[queue.name].file.size

    # -- durability --------------------------------------------------------

    def commit(self) -> Pending[None] | None:
        """Write every queue's buffered records (one write per journal); with
        sync ``always``, a Pending that waits until they are on stable storage
        (concurrent callers share one fsync round)."""
        if self._woken_on:
            self._pass_on_wakes()
        dirty = self._dirty
        if dirty:
            group, limit = self._group, self._max_journal_size
            try:
                for keeper in dirty:
                    if keeper.write(limit):
                        group.wrote(keeper.file)
            except BaseException:
                # in place: the record buffers hold its append
                dirty[:] = [keeper for keeper in dirty if keeper.records.records]
                raise
            dirty.clear()
        return self._durable

    async def run_background(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Periodic fsync (sync policy ``<ms>``), and rewriting of journals
        that are mostly dead records or so many small frames that replay
        after a crash would be slow (encoded, written and fsynced in a worker
        thread). Runs until cancelled."""
        periodic = self.sync.mode == "periodic"
        interval = self.sync.period_ms / 1000 if periodic else COMPACT_CHECK_SECONDS
        next_compaction = trio.current_time() + COMPACT_CHECK_SECONDS
        task_status.started()
        while True:
            await trio.sleep(interval)
            if periodic and not self._group.clean:
                await self._group.sync_round()
            if trio.current_time() >= next_compaction:
                for keeper in list(self._journals.values()):
                    if keeper.wants_rewrite(BACKGROUND_FRAGMENTED_FRAMES, self._max_journal_size):
                        with _old_journal_kept_on_error(keeper):
                            await keeper.rewrite_in_background()
                next_compaction = trio.current_time() + COMPACT_CHECK_SECONDS

    def compact(self, name: bytes, *, failpoint: Failpoint | None = None) -> bool:
        """Rewrite a queue's journal now to hold only its live items
        (atomically). ``failpoint`` lets tests simulate a crash at each step.
        False if there is no such queue, or a background rewrite of it runs."""
        keeper = self._journals.get(name)
        if keeper is None or keeper.rewriting:
            return False
        keeper.rewrite(failpoint)
        return True

    def close(self) -> None:
        """Write what is pending, compact fragmented journals, fsync, close
        every file and release the directory lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.commit()
            for keeper in list(self._journals.values()):
                if keeper.wants_rewrite(FRAGMENTED_FRAMES, self._max_journal_size):
                    with _old_journal_kept_on_error(keeper):
                        keeper.rewrite()
            self._group.sync_now()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close every file and the lock without writing anything more, as a
        crashed process would (``close`` uses it last; tests use it alone)."""
        self._closed = True
        for keeper in self._journals.values():
            keeper.file.close()
        lock_fd, self._lock_fd = self._lock_fd, None
        if lock_fd is not None:
            os.close(lock_fd)  # releases the flock


@contextlib.contextmanager
def _old_journal_kept_on_error(keeper: QueueJournal) -> Iterator[None]:
    """Around an optional rewrite: a failure (a full disk) leaves the old
    journal in place, which is no reason to stop serving; log it."""
    try:
        yield
    except OSError as exc:
        log.error("queue %r: journal rewrite failed, keeping the old one: %s",
                  keeper.queue.name, exc)
