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
``starlingpy.journal``). While serving, running out of something is a
:class:`~starlingpy.store.StoreError` for the command that met it:

* a full disk: every ``put`` first sets aside the space its record needs
  (``fallocate``), so a ``set`` that does not fit is refused with
  ``SERVER_ERROR out of space`` before anything changes. Records that only
  remove (takes, opens, closes, aborts) are written into the space kept
  aside behind them; if even that runs out they stay in memory, the reply
  goes out, and they are written as soon as space returns (a crash in
  between hands those items out again: at least once);
* any other failed write (EIO): ``SERVER_ERROR journal write failed``; the
  records stay buffered and are retried by the next commit;
* descriptors: at most ``max_open_journals`` journals are open at once; the
  least recently written is let go (and opened again when written to);
* queues: past ``max_queues``, ``SERVER_ERROR too many queues``.

Resource handling: the store holds the directory lock and at most
``max_open_journals`` journal descriptors until :meth:`JournalStore.close`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..names import queue_filename
from ..queue import NO_LIMITS, Queue, QueueLimits
from ..store.interface import Pending, StoreError
from ..store.local import LocalStore
from .codec import (
    FRAME_HEADER_SIZE,
    HELD_HEAD,
    RECORD_FIXED_SIZE,
    RecordBuffer,
    encode_file_header,
)
from .file import BACKGROUND_TEMP_SUFFIX, FILE_MODE, Failpoint, JournalFile, TempJournal
from .recovery import StartupError, load_directory, lock_directory
from .snapshot import encode_state
from .sync import GroupCommit, SyncPolicy

log = logging.getLogger("starlingpy.journal")

__all__ = ["JournalStore", "StartupError"]

COMPACT_CHECK_SECONDS = 1.0
FRAGMENTED_FRAMES = 4096  # at close, rewrite journals with more (small) frames than this
BACKGROUND_FRAGMENTED_FRAMES = 65536  # while serving, only when replay would take ~0.1 s+
ADD_RECORD_BYTES = FRAME_HEADER_SIZE + RECORD_FIXED_SIZE  # on disk per item, over its data
REMOVE_SLACK = 4096  # kept aside behind the items, for the records that take them
MAX_OPEN_JOURNALS = 256
OUT_OF_SPACE = b"SERVER_ERROR out of space"
WRITE_FAILED = b"SERVER_ERROR journal write failed"
TOO_MANY_FILES = b"SERVER_ERROR too many open files"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def store_error(error: OSError) -> StoreError:
    """What a client is told about a failed journal operation."""
    if error.errno in _NO_SPACE:
        return StoreError(OUT_OF_SPACE, f"journal: {error}")
    if error.errno in (errno.EMFILE, errno.ENFILE):
        return StoreError(TOO_MANY_FILES, f"journal: {error}")
    return StoreError(WRITE_FAILED, f"journal: {error}")


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
        self.unwritten = 0  # bytes the buffered ADD records need on disk (space set aside)
        self.deferred = False  # removals waiting for disk space

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
            self.unwritten = 0
            return True
        if not records.records:
            return False
        chunks = records.encode()
        before = journal.size
        journal.append(chunks)  # on OSError: the records stay buffered, retried
        records.clear()
        self.unwritten = 0
        if self.deferred:
            self.deferred = False
            log.warning("queue %r: disk space is back; removals written", self.queue.name)
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
        self.write(float("inf"))  # (no size is "too large": never cut back, the rewrite follows)
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
                 max_journal_size: int, clock: Callable[[], float], max_queues: int | None = None,
                 max_open_journals: int = MAX_OPEN_JOURNALS, file_mode: int = FILE_MODE) -> None:
        super().__init__(default_limits=default_limits, limits_by_name=limits_by_name,
                         clock=clock, max_queues=max_queues)
        self.directory = directory
        self.sync = sync
        self.file_mode = file_mode
        self._lock_fd: int | None = lock_fd
        self._max_journal_size = max_journal_size
        self._journals: dict[bytes, QueueJournal] = {}
        self._dirty: list[QueueJournal] = []
        self._group = GroupCommit()
        self._durable = Pending(self._wait_durable) if sync.mode == "always" else None
        # Journals holding a descriptor, least recently written first.
        self._max_open = max(1, max_open_journals)
        self._open_files: OrderedDict[bytes, QueueJournal] = OrderedDict()

    @classmethod
    def open(cls, directory: str | Path, *, sync: SyncPolicy,
             default_limits: QueueLimits = NO_LIMITS,
             limits_by_name: Mapping[bytes, QueueLimits] = {},
             max_journal_size: int = 16 * 1024 * 1024,
             clock: Callable[[], float] = time.time, max_queues: int | None = None,
             max_open_journals: int = MAX_OPEN_JOURNALS,
             file_mode: int = FILE_MODE) -> JournalStore:
        """Lock ``directory`` (creating it if missing) and load every journal
        in it, ours and Ruby Starling's, before returning.

        Raises :class:`StartupError` if the directory cannot be created or
        written, or another server holds it.
        """
        path = Path(directory)
        lock_fd = lock_directory(path)
        store = cls(path, lock_fd, sync, default_limits, limits_by_name, max_journal_size, clock,
                    max_queues, max_open_journals, file_mode)
        try:
            load_directory(store)
            try:
                store.commit()  # ABORTs for transactions a crash left open
            except StoreError as error:  # (a full disk defers them instead)
                log.error("could not write the recovered journals' ABORTs yet: %s", error)
            store._group.sync_now()
        except BaseException:
            store.abandon()
            raise
        return store

    # -- queues and their journals ------------------------------------------

    def _new_queue(self, name: bytes) -> Queue:
        self._descriptor_room()
        try:
            journal = JournalFile.create(self.directory / queue_filename(name), name,
                                         self.file_mode)
        except OSError as error:
            log.error("queue %r: cannot create its journal: %s", name, error)
            raise store_error(error) from None
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
        if journal.fd is not None:
            if len(self._open_files) >= self._max_open:
                journal.release_descriptor()  # (start-up: more journals than descriptors)
            else:
                self._open_files[name] = keeper
        return queue

    def put(self, name: bytes, data: bytes, flags: int, exptime: int, *, delay_ms: int = 0,
            unique: bytes | None = None) -> bool:
        """As the Store's; first sets aside the disk space the record needs,
        so a set that cannot be written is refused before anything changes."""
        keeper = self._journals.get(name)
        if keeper is None:
            self.get_or_create(name)
            keeper = self._journals[name]
        need = keeper.unwritten + len(data) + ADD_RECORD_BYTES
        if delay_ms or unique is not None:
            need += HELD_HEAD.size + len(unique or b"")
        journal = keeper.file
        if journal.reserved_end - journal.size < need + REMOVE_SLACK:
            self._reserve(keeper, need + REMOVE_SLACK)
        stored = self._put_into(keeper.queue, data, flags, exptime, delay_ms, unique)
        # Count the space only while records wait to be written: an expired
        # or refused item writes none, and must not grow the reservation.
        keeper.unwritten = need if keeper.records.records else 0
        return stored

    def _reserve(self, keeper: QueueJournal, nbytes: int) -> None:
        journal = keeper.file
        try:
            if journal.fd is None:
                self._descriptor_for(keeper)
            journal.reserve(nbytes)
        except OSError as error:
            raise store_error(error) from None

    # -- descriptors -------------------------------------------------------

    def _descriptor_room(self) -> None:
        """Let go of the least recently written journals until one more fits."""
        open_files = self._open_files
        while len(open_files) >= self._max_open:
            name, keeper = open_files.popitem(last=False)
            if self.sync.mode != "never":
                # Sync before closing: the next round, or one in flight in the
                # fsync thread, would find the descriptor gone and vouch for
                # writes it never synced.
                keeper.file.fsync()
            self._group.forget(keeper.file)
            keeper.file.release_descriptor()

    def _descriptor_for(self, keeper: QueueJournal) -> None:
        """Open ``keeper``'s journal again (it was let go)."""
        self._descriptor_room()
        keeper.file.reopen()
        self._open_files[keeper.queue.name] = keeper

    def open_journals(self) -> int:
        """Journal descriptors held now."""
        return len(self._open_files)

    def journal_of(self, name: bytes) -> QueueJournal | None:
        return self._journals.get(name)

    def _queue_dropped(self, queue: Queue) -> None:
        keeper = self._journals.pop(queue.name)
        self._open_files.pop(queue.name, None)
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
            crowded = len(self._journals) > self._max_open
            try:
                for keeper in dirty:
                    if crowded:  # more journals than descriptors: keep the busy ones open
                        if keeper.file.fd is None:
                            self._descriptor_for(keeper)
                        self._open_files.move_to_end(keeper.queue.name)
                    if keeper.write(limit):
                        group.wrote(keeper.file)
            except OSError:
                self._commit_one_by_one()
            else:
                dirty.clear()
        return self._durable

    def _commit_one_by_one(self) -> None:
        """A write failed: write each journal on its own. Removal-only records
        that meet a full disk wait for space (and the reply goes out); any
        other failure is the command's error. What was not written stays
        buffered (``dirty`` keeps it, in place: the record buffers append to it)."""
        group, limit, dirty = self._group, self._max_journal_size, self._dirty
        failure: OSError | None = None
        for keeper in list(dirty):
            try:
                if keeper.file.fd is None:
                    self._descriptor_for(keeper)
                if keeper.write(limit):
                    group.wrote(keeper.file)
            except OSError as error:
                if error.errno in _NO_SPACE and keeper.records.added is None:
                    if not keeper.deferred:
                        keeper.deferred = True
                        log.error("queue %r: disk full; removals kept in memory until space "
                                  "returns (a crash before then hands them out again)",
                                  keeper.queue.name)
                else:
                    failure = error
        dirty[:] = [keeper for keeper in dirty if keeper.records.records]
        if failure is not None:
            log.error("journal write failed: %s", failure)
            raise store_error(failure)

    def observe_syncs(self, observer: Callable[[float], None]) -> None:
        """Tell ``observer`` how long each fsync round took (seconds): metrics."""
        self._group.on_sync = observer

    async def _wait_durable(self) -> None:
        try:
            await self._group.wait_durable()
        except OSError as error:
            log.error("journal fsync failed: %s", error)
            raise store_error(error) from None

    async def run_background(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Periodic fsync (sync policy ``<ms>``), and rewriting of journals
        that are mostly dead records or so many small frames that replay
        after a crash would be slow (encoded, written and fsynced in a worker
        thread). Runs until cancelled."""
        periodic = self.sync.mode == "periodic"
        interval = self.sync.period_ms / 1000 if periodic else COMPACT_CHECK_SECONDS
        next_compaction = trio.current_time() + COMPACT_CHECK_SECONDS
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.wake_when_due)
            task_status.started()
            await self._maintain(periodic, interval, next_compaction)

    async def _maintain(self, periodic: bool, interval: float, next_compaction: float) -> None:
        while True:
            await trio.sleep(interval)
            if periodic and not self._group.clean:
                try:
                    await self._group.sync_round()
                except OSError as error:  # retried next period; never the end of the server
                    log.error("journal fsync failed: %s", error)
            if self._dirty:  # removals waiting for disk space, or a write to retry
                try:
                    self.commit()
                except StoreError:
                    pass
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
            try:
                self.commit()
            except StoreError as error:  # (a full disk: those removals are not on disk)
                log.error("closing with records not written: %s", error)
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
        self._group.stop()
        for keeper in self._journals.values():
            keeper.file.close()
        self._open_files.clear()
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
