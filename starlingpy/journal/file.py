"""A journal file on disk: append, fsync, truncate, atomic rewrite.

Error handling: ``OSError`` from the operating system propagates; a failed
rewrite leaves the old journal in place and removes its temporary file.

Resource handling: a :class:`JournalFile` holds one file descriptor until
:meth:`JournalFile.close` (idempotent).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .codec import encode_file_header

TEMP_SUFFIX = ".tmp"
BACKGROUND_TEMP_SUFFIX = ".compacting.tmp"  # a background rewrite's own temp file
BROKEN_SUFFIX = ".broken"
_IOV_MAX = 512  # stay under the kernel's IOV_MAX (1024) per writev

Failpoint = Callable[[str], None]
"""Called with the name of each step of a rewrite (``"temp-written"``,
``"temp-synced"``, ``"renamed"``, ``"dir-synced"``); tests raise from it to
simulate a crash at that point."""


def _no_failpoint(step: str) -> None:
    pass


def write_all(fd: int, chunks: Sequence[bytes]) -> int:
    """Write every chunk, in order, with as few system calls as possible."""
    if len(chunks) <= _IOV_MAX:  # the usual case: one writev
        done = os.writev(fd, chunks)
        want = sum(map(len, chunks))
        if done == want:
            return done
        _finish_write(fd, chunks, done)
        return want
    total = 0
    for first in range(0, len(chunks), _IOV_MAX):
        total += write_all(fd, chunks[first:first + _IOV_MAX])
    return total


def _finish_write(fd: int, chunks: Sequence[bytes], done: int) -> None:
    """After a short writev (huge batch, or a signal), write the rest plainly."""
    rest = memoryview(b"".join(chunks))[done:]
    while rest:
        rest = rest[os.write(fd, rest):]


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def broken_copy(path: Path) -> Path:
    """Copy a damaged journal aside (``<file>.broken``, or ``.broken.N`` if
    taken) before it is cut, so nothing is lost for good; return the copy."""
    target = path.with_name(path.name + BROKEN_SUFFIX)
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{BROKEN_SUFFIX}.{n}")
        n += 1
    with open(path, "rb") as src, open(target, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    return target


class JournalFile:
    """One queue's journal, open for appending. ``size`` is its length on
    disk (everything appended so far)."""

    def __init__(self, path: Path, fd: int, header_size: int, size: int) -> None:
        self.path = path
        self.fd: int | None = fd
        self.header_size = header_size
        self.size = size

    @classmethod
    def create(cls, path: Path, name: bytes) -> JournalFile:
        """A new, empty journal for queue ``name`` (replacing any file there)."""
        header = encode_file_header(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                     0o644)
        try:
            write_all(fd, [header])
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, len(header), len(header))

    @classmethod
    def open_existing(cls, path: Path, header_size: int, good_end: int) -> JournalFile:
        """Open a recovered journal for appending, cutting it at ``good_end``
        (the end of its last good frame) if anything follows."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != good_end:
                os.ftruncate(fd, good_end)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, header_size, good_end)

    def append(self, chunks: Sequence[bytes]) -> None:
        """Write encoded frames at the end (one ``writev``; no fsync)."""
        fd = self.fd
        assert fd is not None, "journal is closed"
        try:
            if len(chunks) <= _IOV_MAX:  # write_all's usual case, inline: this is the hot path
                done = os.writev(fd, chunks)
                want = sum(map(len, chunks))
                if done != want:
                    _finish_write(fd, chunks, done)
                self.size += want
            else:
                self.size += write_all(fd, chunks)
        except OSError:
            # A frame half-written mid-file would read as corruption and hide
            # every frame after it: take the partial frame back out.
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            raise

    def fsync(self) -> None:
        """Flush to stable storage. A journal closed meanwhile (its queue was
        deleted while a sync ran in a thread) is skipped."""
        fd = self.fd
        if fd is None:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise

    def truncate(self) -> None:
        """Drop every frame, keeping the header (the queue is empty)."""
        assert self.fd is not None, "journal is closed"
        os.ftruncate(self.fd, self.header_size)
        self.size = self.header_size

    def rewrite(self, header: bytes, chunks: Sequence[bytes],
                failpoint: Failpoint | None = None) -> None:
        """Replace the journal with ``header`` + ``chunks``, atomically: a
        crash at any point leaves either the old or the new file, complete.

        Temp file, write, fsync, rename over the journal, fsync the
        directory. From the rename on, appends go to the new file.
        """
        failpoint = failpoint or _no_failpoint
        temp = self.start_rewrite(header, chunks, failpoint=failpoint)
        self.finish_rewrite(temp, [], failpoint)

    def start_rewrite(self, header: bytes, chunks: Sequence[bytes], *,
                      suffix: str = TEMP_SUFFIX,
                      failpoint: Failpoint = _no_failpoint) -> TempJournal:
        """First half of a rewrite: the new journal, written and fsynced
        under a temporary name. Touches nothing else, so it may run in a
        worker thread while the journal keeps being appended to."""
        temp = self.path.with_name(self.path.name + suffix)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                     0o644)
        try:
            size = write_all(fd, [header, *chunks])
            failpoint("temp-written")
            os.fsync(fd)
            failpoint("temp-synced")
        except OSError:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        except BaseException:  # a simulated crash: leave the files as they are
            os.close(fd)
            raise
        return TempJournal(temp, fd, len(header), size)

    def finish_rewrite(self, temp: TempJournal, tail: Sequence[bytes],
                       failpoint: Failpoint = _no_failpoint) -> None:
        """Second half: append ``tail`` (frames written to the old journal
        since the snapshot), fsync, rename over the journal, switch to it,
        fsync the directory."""
        try:
            if tail:
                temp.size += write_all(temp.fd, tail)
                os.fsync(temp.fd)
            os.rename(temp.path, self.path)
        except OSError:
            temp.discard()
            raise
        old, self.fd = self.fd, temp.fd
        self.header_size, self.size = temp.header_size, temp.size
        if old is not None:
            os.close(old)
        failpoint("renamed")
        fsync_directory(self.path.parent)
        failpoint("dir-synced")

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def delete(self) -> None:
        """Close and remove the file."""
        self.close()
        self.path.unlink(missing_ok=True)


class TempJournal:
    """A rewritten journal not yet renamed into place."""

    def __init__(self, path: Path, fd: int, header_size: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self.header_size = header_size
        self.size = size

    def discard(self) -> None:
        """Give up on it: close and remove."""
        os.close(self.fd)
        self.path.unlink(missing_ok=True)
