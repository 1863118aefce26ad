"""The queue directory: every queue by name, loaded at start-up, created,
deleted and flushed on demand, with one consistent stats snapshot.

Error handling: :meth:`QueueCollection.open` raises :class:`StartupError`
(a message for a human) when the directory cannot be used. Damaged journals
are not errors: they are cut at the last good record and logged (logger
``starlingpy.journal``). ``OSError`` while serving (a full disk) propagates
to the caller of the operation that hit it.

Resource handling: the collection holds the directory lock and one file
descriptor per queue until :meth:`QueueCollection.close`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import trio

from .journal.codec import (
    ADD,
    NOTE,
    JournalFormatError,
    decode_file_header,
    encode_file_header,
    encode_frame,
    little_endian,
)
from .journal.file import (
    TEMP_SUFFIX,
    Failpoint,
    JournalFile,
    broken_copy,
    fsync_directory,
)
from .journal.legacy import parse_legacy
from .journal.replay import Recovered, replay
from .journal.sync import GroupCommit, SyncPolicy
from .names import SUFFIX, is_journal_filename, queue_filename, queue_name_from_filename
from .queue import PersistentQueue, QueueLimits, QueueStatistics

log = logging.getLogger("starlingpy.journal")
NO_LIMITS = QueueLimits()

LOCK_NAME = ".starlingpy.lock"  # starts with ".", which no encoded queue name does
LEGACY_DIR = ".starling-legacy"  # Starling journals we took over are moved here
LEGACY_NOTE = b"starling-import:"
COMPACT_CHECK_SECONDS = 1.0
MAX_FILE_HEADER = 8 + 2 + 0xFFFF + 4
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
FRAGMENTED_FRAMES = 4096  # at close, rewrite journals with more (small) frames than this
BACKGROUND_FRAGMENTED_FRAMES = 65536  # while serving, only when replay would take ~0.1 s+


class StartupError(Exception):
    """The queue directory cannot be used (unwritable, or locked by another
    server); the message says which and why."""


class QueueCollection:
    """Every queue of one directory. Use :meth:`open`; single-threaded."""

    def __init__(self, directory: Path, lock_fd: int, sync: SyncPolicy,
                 default_limits: QueueLimits, limits_by_name: Mapping[bytes, QueueLimits],
                 max_journal_size: int, clock: Callable[[], float]) -> None:
        self.directory = directory
        self.sync = sync
        self._lock_fd: int | None = lock_fd
        self._default_limits = default_limits
        self._limits_by_name = dict(limits_by_name)
        self._max_journal_size = max_journal_size
        self._clock = clock
        self._queues: dict[bytes, PersistentQueue] = {}
        self._dirty: list[PersistentQueue] = []
        self._commit = GroupCommit()
        self._notes: dict[bytes, list[bytes]] = {}
        # Readers parked on a name, shared by every queue object of that name:
        # a reader parked on a queue that is then deleted and made again still
        # hears the puts on the new one.
        self._parked: dict[bytes, dict[trio.Event, None]] = {}
        # Queues a woken reader was parked on: once it has tried to take, a
        # wake it did not use is passed on (see _pass_on_wakes).
        self._woken_on: list[PersistentQueue] = []
        self._closed = False

    @classmethod
    def open(cls, directory: str | Path, *, sync: SyncPolicy,
             default_limits: QueueLimits = NO_LIMITS,
             limits_by_name: Mapping[bytes, QueueLimits] = {},
             max_journal_size: int = 16 * 1024 * 1024,
             clock: Callable[[], float] = time.time) -> QueueCollection:
        """Lock ``directory`` (creating it if missing) and load every journal
        in it, ours and Ruby Starling's, before returning.

        Raises :class:`StartupError` if the directory cannot be created or
        written, or another server holds it.
        """
        path = Path(directory)
        lock_fd = _lock_directory(path)
        collection = cls(path, lock_fd, sync, default_limits, limits_by_name, max_journal_size,
                         clock)
        try:
            collection._load()
        except BaseException:
            collection.abandon()
            raise
        return collection

    # -- queues ------------------------------------------------------------

    def get(self, name: bytes) -> PersistentQueue | None:
        """The queue called ``name`` if it exists."""
        return self._queues.get(name)

    def get_or_create(self, name: bytes) -> PersistentQueue:
        """The queue called ``name``, created (with its journal file) if new."""
        queue = self._queues.get(name)
        if queue is None:
            if self._closed:
                raise RuntimeError("queue collection is closed")
            journal = JournalFile.create(self.directory / queue_filename(name), name)
            self._commit.changed_directory(self.directory)
            queue = self._new_queue(name, journal)
        return queue

    def delete(self, name: bytes) -> bool:
        """Drop a queue, its items and its journal file; False if no such queue."""
        queue = self._queues.pop(name, None)
        if queue is None:
            return False
        queue._deleted = True
        queue._pending.clear()
        queue._drop_waiting()
        self._commit.forget(queue._journal)
        queue._journal.delete()
        self._commit.changed_directory(self.directory)
        queue._wake_all()  # blocked readers re-check (and find nothing)
        if not queue._waiters:
            self._parked.pop(name, None)
        return True

    def flush_all(self) -> None:
        """Empty every queue (open items stay open)."""
        for queue in self._queues.values():
            queue.flush()

    def names(self) -> list[bytes]:
        """Every queue's name, sorted."""
        return sorted(self._queues)

    def statistics(self) -> dict[bytes, QueueStatistics]:
        """Every queue's counters, taken at one moment."""
        return {name: queue.statistics() for name, queue in sorted(self._queues.items())}

    async def wait_for_put(self, queues: Sequence[PersistentQueue], deadline: float) -> None:
        """Park until any of ``queues`` may have an item, or until
        ``deadline`` (``trio.current_time()`` terms). Counts as a waiter on
        each queue meanwhile. Always checkpoints; cancel-safe.

        A put wakes one parked reader per item, not all of them. The woken
        caller is expected to try to take at once (before its next
        checkpoint), then to come back here or to let ``write_pending`` run,
        as the connection loop does before every reply: either passes the
        wake on to another reader if the item is still there.
        """
        if self._woken_on:
            self._pass_on_wakes()
        if any(queue._count for queue in queues):
            await trio.lowlevel.checkpoint()
            return
        woken = trio.Event()
        for queue in queues:
            if queue._deleted:  # park where the name's next queue will look
                queue._waiters = self._parked.setdefault(queue.name, queue._waiters)
            queue._waiters[woken] = None
        try:
            with trio.move_on_at(deadline):
                await woken.wait()
        finally:
            for queue in queues:
                queue._waiters.pop(woken, None)
                if not queue._waiters and queue.name not in self._queues:
                    self._parked.pop(queue.name, None)
            if woken.is_set():
                self._woken_on += queues

    def _pass_on_wakes(self) -> None:
        """Readers woken by a put have had their try: where items are still
        waiting with readers parked and none of those readers woken, wake one
        (it passes the wake on in turn if it has no use for it)."""
        queues, self._woken_on = self._woken_on, []
        for queue in queues:
            if queue._deleted:  # its name's readers are parked on the queue made since, if any
                queue = self._queues.get(queue.name, queue)
            if (queue._count and queue._waiters and not queue._deleted
                    and not any(event.is_set() for event in queue._waiters)):
                queue._wake()

    # -- durability --------------------------------------------------------

    def write_pending(self) -> None:
        """Write every queue's buffered records (one write per journal).
        Also passes on wakes that woken readers did not use."""
        if self._woken_on:
            self._pass_on_wakes()
        dirty = self._dirty
        if not dirty:
            return
        commit = self._commit
        try:
            for queue in dirty:
                if queue._write_pending():
                    commit.wrote(queue._journal)
        except BaseException:
            dirty[:] = [queue for queue in dirty if queue._dirty]  # in place: queues hold its append
            raise
        dirty.clear()

    async def wait_durable(self) -> None:
        """With sync policy ``always``, return once everything written so far
        is on stable storage (concurrent callers share one fsync round).
        Otherwise return at once. Always checkpoints."""
        if self.sync.mode == "always":
            await self._commit.wait_durable()
        else:
            await trio.lowlevel.checkpoint()

    async def run_background(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
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
            if periodic and not self._commit.clean:
                await self._commit.sync_round()
            if trio.current_time() >= next_compaction:
                for queue in list(self._queues.values()):
                    if queue._wants_rewrite(BACKGROUND_FRAGMENTED_FRAMES):
                        with _old_journal_kept_on_error(queue):
                            await queue._rewrite_in_background()
                next_compaction = trio.current_time() + COMPACT_CHECK_SECONDS

    def compact(self, name: bytes, *, failpoint: Failpoint | None = None) -> bool:
        """Rewrite a queue's journal now to hold only its live items
        (atomically). ``failpoint`` lets tests simulate a crash at each step.
        False if there is no such queue, or a background rewrite of it runs."""
        queue = self._queues.get(name)
        if queue is None or queue._rewriting:
            return False
        queue._rewrite(failpoint)
        return True

    def close(self) -> None:
        """Write what is pending, compact fragmented journals, fsync, close
        every file and release the directory lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.write_pending()
            self._compact_where_needed(fragmented_frames=FRAGMENTED_FRAMES)
            self._commit.sync_now()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close every file and the lock without writing anything more, as a
        crashed process would (``close`` uses it last; tests use it alone)."""
        self._closed = True
        for queue in self._queues.values():
            queue._journal.close()
        lock_fd, self._lock_fd = self._lock_fd, None
        if lock_fd is not None:
            os.close(lock_fd)  # releases the flock

    # -- internals ---------------------------------------------------------

    def _limits_for(self, name: bytes) -> QueueLimits:
        return self._limits_by_name.get(name, self._default_limits)

    def _new_queue(self, name: bytes, journal: JournalFile,
                   state: Recovered | None = None) -> PersistentQueue:
        queue = PersistentQueue(name, journal, self._limits_for(name), self._clock,
                                self._dirty.append, self._max_journal_size)
        if state is not None:
            queue._restore(state)
        queue._waiters = self._parked.setdefault(name, queue._waiters)
        self._queues[name] = queue
        return queue

    def _compact_where_needed(self, fragmented_frames: float) -> None:
        for queue in list(self._queues.values()):
            if queue._wants_rewrite(fragmented_frames):
                with _old_journal_kept_on_error(queue):
                    queue._rewrite()

    def _load(self) -> None:
        legacy: list[str] = []
        with os.scandir(self.directory) as listing:
            # (the file types come with the listing: no stat per file)
            files = sorted(entry.name for entry in listing if entry.is_file(follow_symlinks=False))
        for filename in files:  # our files are all regular; never follow a link out
            path = self.directory / filename
            name = queue_name_from_filename(filename)  # None for the hashed form too
            if SUFFIX + "." in filename and filename.endswith(TEMP_SUFFIX):
                # A rewrite that a crash interrupted before its rename: the
                # journal it was replacing is still whole.
                path.unlink(missing_ok=True)
                log.info("removed unfinished journal rewrite %s", path)
            elif name is not None or is_journal_filename(filename):
                self._load_journal(path, name)
            elif not filename.startswith(".") and SUFFIX + "." not in filename:
                legacy.append(filename)  # maybe Ruby Starling's (it never made dotfiles)
        for filename in legacy:
            self._take_over_legacy(self.directory / filename, filename)
        self.write_pending()  # ABORTs for transactions a crash left open
        self._commit.sync_now()
        self._notes.clear()

    def _load_journal(self, path: Path, name: bytes | None) -> None:
        with _read_whole(path) as buf:
            try:
                header_name, header_size = decode_file_header(buf[:MAX_FILE_HEADER])
            except JournalFormatError as exc:
                self._replace_unreadable(path, name, buf[:MAX_FILE_HEADER], str(exc))
                return
            state = replay(buf, header_size)
        if name is not None and header_name != name:
            log.warning("journal %s names queue %r; using the file name's %r",
                        path, header_name, name)
        name = name if name is not None else header_name
        if state.damage is not None:
            cut = path.stat().st_size - state.end
            if state.damage.kind == "corrupt":
                copy = broken_copy(path)
                log.error("queue %r: %s at offset %d; copied the journal to %s and cut %d bytes "
                          "from there", name, state.damage.reason, state.damage.offset, copy, cut)
            else:
                log.warning("queue %r: torn tail (%s) at offset %d; cut %d bytes", name,
                            state.damage.reason, state.damage.offset, cut)
        journal = JournalFile.open_existing(path, header_size, state.end)
        self._new_queue(name, journal, state)
        if state.notes:
            self._notes[name] = state.notes
        log.info("queue %r: recovered %d items (%d bytes) from %d frames%s", name, state.items,
                 state.bytes, state.frames,
                 f"; {len(state.reopened)} open items put back at the head"
                 if state.reopened else "")

    def _replace_unreadable(self, path: Path, name: bytes | None, buf: bytes, why: str) -> None:
        """A journal without a valid header: empty if it is only a cut-short
        header (a crash right after creating it), else kept aside as broken."""
        torn = name is not None and encode_file_header(name).startswith(buf)
        if not torn:
            copy = broken_copy(path)
            log.error("journal %s is unreadable (%s); moved it to %s", path, why, copy)
            if name is None:
                path.unlink()
                return
        journal = JournalFile.create(path, name)
        self._new_queue(name, journal)
        if torn:
            log.warning("queue %r: journal header cut short; starting it empty", name)

    def _take_over_legacy(self, path: Path, filename: str) -> None:
        """Import a Ruby Starling journal into ours, then move it aside.

        The items and a note with the legacy file's digest go into our
        journal as ONE frame (all or nothing); the file is moved only after
        that is fsynced. A crash in between leaves the note, and the next
        start-up just moves the file aside instead of importing it twice.
        """
        with open(path, "rb") as f:
            if f.read(1) not in (b"", b"\x00", b"\x01"):  # not Starling's: do not read it all
                log.warning("ignoring %s: neither our journal nor a Starling one", path)
                return
            f.seek(0)
            buf = f.read()
        parsed = parse_legacy(buf)
        if parsed is None:
            log.warning("ignoring %s: neither our journal nor a Starling one", path)
            return
        name = os.fsencode(filename)
        note = LEGACY_NOTE + hashlib.sha256(buf).hexdigest().encode()
        if note in self._notes.get(name, ()):
            log.info("queue %r: Starling journal %s was already imported", name, path)
        else:
            queue = self.get_or_create(name)
            count = len(parsed.items)
            added = self._clock()
            lengths = array("I", [len(data) for _, data in parsed.items] + [len(note)])
            expiries = array("d", [float(expiry) for expiry, _ in parsed.items] + [0.0])
            data = [d for _, d in parsed.items] + [note]
            frame = encode_frame(count + 1, bytes([ADD]) * count + bytes([NOTE]),
                                 bytes(4 * (count + 1)), little_endian(lengths),
                                 little_endian(expiries), data, sum(lengths), added)
            queue._write_pending()
            queue._journal.append(frame)
            queue._journal.fsync()
            fsync_directory(self.directory)
            for expiry, item_data in parsed.items:
                queue._append_loaded(item_data, 0, float(expiry), added)
            if parsed.cut:
                log.warning("queue %r: Starling journal %s ends in a record cut short; "
                            "ignored its last %d bytes", name, path, parsed.cut)
            log.info("queue %r: imported %d items from Starling journal %s", name, count, path)
        aside = self.directory / LEGACY_DIR
        aside.mkdir(exist_ok=True)
        target = aside / filename
        n = 1
        while target.exists():
            target = aside / f"{filename}.{n}"
            n += 1
        os.rename(path, target)
        fsync_directory(aside)
        fsync_directory(self.directory)
        log.info("moved the Starling journal to %s", target)


@contextlib.contextmanager
def _old_journal_kept_on_error(queue: PersistentQueue) -> Iterator[None]:
    """Around an optional rewrite: a failure (a full disk) leaves the old
    journal in place, which is no reason to stop serving; log it."""
    try:
        yield
    except OSError as exc:
        log.error("queue %r: journal rewrite failed, keeping the old one: %s", queue.name, exc)


@contextlib.contextmanager
def _read_whole(path: Path) -> Iterator[bytes | mmap.mmap]:
    """A journal's bytes: mapped and pre-faulted (much cheaper than reading
    a large file into fresh memory); replay copies out what it keeps."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 1 << 20:
            yield f.read()
            return
        mapped = mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED | _MAP_POPULATE,
                           prot=mmap.PROT_READ)
        try:
            yield mapped
        finally:
            try:
                mapped.close()
            except BufferError:  # a view still exists: the mapping goes with it
                pass


def _lock_directory(path: Path) -> int:
    """Create ``path`` if needed, prove it writable, and take its lock."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create queue directory {path}: {exc.strerror or exc}") from exc
    if not path.is_dir():
        raise StartupError(f"queue path {path} is not a directory")
    probe = path / (LOCK_NAME + ".probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        os.close(fd)
        probe.unlink()
        lock_fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StartupError(f"queue directory {path} is not writable: "
                           f"{exc.strerror or exc}") from exc
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(lock_fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StartupError(f"queue directory {path} is in use by another server "
                               f"(its lock {path / LOCK_NAME} is held)") from exc
        raise StartupError(f"cannot lock queue directory {path}: {exc.strerror or exc}") from exc
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"{os.getpid()}\n".encode())
    return lock_fd
