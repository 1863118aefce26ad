"""When journals reach stable storage: the sync policy and group commit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from .file import JournalFile, fsync_directory

log = logging.getLogger("starlingpy.journal")


@dataclass(frozen=True)
class SyncPolicy:
    """How often journals are fsynced.

    ``always``: a reply waits until its records are on stable storage;
    ``period_ms``: at least that often, in the background; ``never``: the
    operating system decides (Starling's behaviour).
    """

    mode: str  # "always" | "periodic" | "never"
    period_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> SyncPolicy:
        """``"always"``, ``"never"`` or a positive period in milliseconds;
        ``ValueError`` otherwise."""
        word = str(text).strip().lower()
        if word in ("always", "never"):
            return cls(word)
        try:
            period = int(word)
        except ValueError:
            raise ValueError(f"sync policy must be 'always', 'never' or milliseconds, "
                             f"not {text!r}") from None
        if period <= 0:
            raise ValueError(f"sync period must be a positive number of milliseconds, not {text!r}")
        return cls("periodic", period)

    def __str__(self) -> str:
        return str(self.period_ms) if self.mode == "periodic" else self.mode


# The longest a round waits for runnable connections to add their records
# (a server kept busy by clients that never wait must still sync).
GATHER_LIMIT = 0.002


class GroupCommit:
    """Tracks what was written but not yet fsynced, and fsyncs it in rounds.

    Every ``write_pending`` bumps ``written``; a round fsyncs everything dirty
    in a worker thread and then vouches for every write made before it
    started. Callers that arrive while a round runs wait for the next one and
    share it: one fsync per file per round, however many replies wait on it.
    """

    def __init__(self) -> None:
        self._dirty_files: set[JournalFile] = set()
        self._dirty_dirs: set[Path] = set()
        self._written = 0
        self._synced = 0
        self._round: trio.Event | None = None
        self._syncer: FsyncThread | None = None
        self.on_sync: Callable[[float], None] | None = None  # told each round's fsync seconds

    def wrote(self, journal: JournalFile) -> None:
        """``journal`` was appended to (or truncated)."""
        self._dirty_files.add(journal)
        self._written += 1

    def changed_directory(self, path: Path) -> None:
        """A file was created, renamed or removed in ``path``."""
        self._dirty_dirs.add(path)
        self._written += 1

    def forget(self, journal: JournalFile) -> None:
        """``journal`` is being closed: nothing to sync for it any more."""
        self._dirty_files.discard(journal)

    @property
    def dirty_files(self) -> set[JournalFile]:
        """Journals written since their last fsync."""
        return self._dirty_files

    @property
    def clean(self) -> bool:
        return not self._dirty_files and not self._dirty_dirs

    async def wait_durable(self) -> None:
        """Return once every write made so far is fsynced (always checkpoints)."""
        target = self._written
        if self._synced >= target:
            await trio.lowlevel.checkpoint()
            return
        while self._synced < target:
            if self._round is not None:
                await self._round.wait()
            else:
                await self.sync_round(gather=True)

    async def sync_round(self, gather: bool = False) -> None:
        """Fsync everything dirty now, in a worker thread.

        ``gather``: first let every connection that can run do so (bounded by
        GATHER_LIMIT), so the writers the last round released get their next
        record into this round. Without it, rounds alternate between those
        writers and the ones that arrived during the round, and each writer
        waits for about two fsyncs instead of one.
        """
        if self._round is not None:  # one round at a time; join it
            await self._round.wait()
            return
        self._round = done = trio.Event()
        files: set = set()
        dirs: set = set()
        try:
            if gather:
                await _let_runnable_tasks_run(GATHER_LIMIT)
            files, dirs = self._dirty_files, self._dirty_dirs
            self._dirty_files, self._dirty_dirs = set(), set()
            mark = self._written
            started = time.perf_counter()
            if self._syncer is None:
                self._syncer = FsyncThread()
            await self._syncer.run(list(files), list(dirs))
            if self.on_sync is not None:
                self.on_sync(time.perf_counter() - started)
        except BaseException:
            self._dirty_files |= files  # not vouched for: the next round retries
            self._dirty_dirs |= dirs
            raise
        else:
            self._synced = max(self._synced, mark)
        finally:
            self._round = None
            done.set()

    def sync_now(self) -> None:
        """Fsync everything dirty, blocking (start-up and close only)."""
        files, dirs = self._dirty_files, self._dirty_dirs
        self._dirty_files, self._dirty_dirs = set(), set()
        _fsync_all(list(files), list(dirs))
        self._synced = self._written

    def stop(self) -> None:
        """Let the fsync thread go (the store is closing)."""
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None


class FsyncThread:
    """One thread that runs the rounds' fsyncs, so the event loop never
    blocks on the disk. A round hands it the work and is woken when it is
    done; about a third of the cost of ``trio.to_thread.run_sync`` per round
    (no limiter, no thread cache hand-off, no context copy), which matters
    when a round is paid every few requests (``--sync always``)."""

    def __init__(self) -> None:
        self._work: list = []
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name="starlingpy-fsync", daemon=True)
        self._thread.start()

    async def run(self, files: list[JournalFile], dirs: list[Path]) -> None:
        """Fsync ``files`` and ``dirs`` in the thread; raise what it raised.
        Not cancellable (an fsync cannot be taken back): a cancelled round
        still waits for it."""
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()
        result: list = []

        def finished(error: BaseException | None) -> None:
            result.append(error)
            trio.lowlevel.reschedule(task)

        def done(error: BaseException | None) -> None:
            try:
                token.run_sync_soon(finished, error)
            except trio.RunFinishedError:
                pass
        with self._wake:
            self._work.append((files, dirs, done))
            self._wake.notify()
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        if result[0] is not None:
            raise result[0]

    def stop(self) -> None:
        with self._wake:
            self._work.append(None)
            self._wake.notify()
        self._thread.join()

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._work:
                    self._wake.wait()
                job = self._work.pop(0)
            if job is None:
                return
            files, dirs, done = job
            try:
                _fsync_all(files, dirs)
            except BaseException as error:  # handed to the waiting round
                done(error)
            else:
                done(None)


async def _let_runnable_tasks_run(limit: float) -> None:
    """Yield until no other task can run (or ``limit`` seconds passed): the
    writers that can still add a record to this round have done so.

    The run queue does not show the tasks of the scheduler's current batch
    that run after us, so nothing runnable must be seen twice in a row (the
    second time, that batch has run)."""
    statistics = trio.lowlevel.current_statistics
    deadline = trio.current_time() + limit
    quiet = 0
    while quiet < 2 and trio.current_time() < deadline:
        await trio.lowlevel.checkpoint()
        quiet = 0 if statistics().tasks_runnable else quiet + 1


def _fsync_all(files: list[JournalFile], dirs: list[Path]) -> None:
    for journal in files:
        journal.fsync()
    for path in dirs:
        try:
            fsync_directory(path)
        except FileNotFoundError:
            pass
