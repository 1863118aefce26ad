"""A journal file on disk: append, fsync, truncate, atomic rewrite.

Error handling: ``OSError`` from the operating system propagates; a failed
rewrite leaves the old journal in place and removes its temporary file.

Resource handling: a :class:`JournalFile` holds at most one file descriptor,
let go while its queue is idle and for good at :meth:`JournalFile.close`
(idempotent), and the disk space set aside ahead of its end. Files are
created mode 0600 and never opened through a symbolic link.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .codec import encode_file_header

TEMP_SUFFIX = ".tmp"
BACKGROUND_TEMP_SUFFIX = ".compacting.tmp"  # a background rewrite's own temp file
BROKEN_SUFFIX = ".broken"
_IOV_MAX = 512  # stay under the kernel's IOV_MAX (1024) per writev
FILE_MODE = 0o600  # journals hold the messages: readable by the server's user only
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW  # never through a link
_FALLOC_FL_KEEP_SIZE = 1
_FALLOC_FL_PUNCH_HOLE = 2
RESERVE_CHUNK = 256 * 1024  # disk space set aside ahead of a journal's end, at a time

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
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE)
    with open(path, "rb") as src, open(fd, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    return target




def _fallocate():
    """libc's fallocate(2), or None where there is none (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_libc_fallocate = _fallocate()


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2); ``OSError`` as the system call fails (EOPNOTSUPP where
    the file system or platform cannot)."""
    if _libc_fallocate is None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    if _libc_fallocate(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class JournalFile:
    """One queue's journal, open for appending. ``size`` is its length on
    disk (everything appended so far).

    The descriptor may be let go while the queue is idle
    (:meth:`release_descriptor`) and is opened again by the next write.
    Space is set aside ahead of the end (:meth:`reserve`, ``fallocate``
    without changing the size), so a write that fits in it cannot fail for
    want of space.
    """

    def __init__(self, path: Path, fd: int | None, header_size: int, size: int,
                 mode: int = FILE_MODE) -> None:
        self.path = path
        self.fd: int | None = fd
        self.header_size = header_size
        self.size = size
        self.mode = mode
        self.reserved_end = size  # space is allocated up to here
        self.closed = False

    @classmethod
    def create(cls, path: Path, name: bytes, mode: int = FILE_MODE) -> JournalFile:
        """A new, empty journal for queue ``name`` (replacing any regular file
        there; a symbolic link there is refused with ``ELOOP``)."""
        header = encode_file_header(name)
        fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_TRUNC, mode)
        try:
            write_all(fd, [header])
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)  # a file cut short (a full disk) helps no one
            raise
        return cls(path, fd, len(header), len(header), mode)

    @classmethod
    def open_existing(cls, path: Path, header_size: int, good_end: int,
                      mode: int = FILE_MODE) -> JournalFile:
        """Open a recovered journal for appending, cutting it at ``good_end``
        (the end of its last good frame) if anything follows."""
        fd = os.open(path, _OPEN_FLAGS)
        try:
            if os.fstat(fd).st_size != good_end:
                os.ftruncate(fd, good_end)
                os.fsync(fd)
            else:  # space a crashed server had set aside past the end: give it back
                try:
                    fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, good_end, 1 << 40)
                except OSError:
                    pass
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, header_size, good_end, mode)

    def reopen(self) -> int:
        """The descriptor, opened again if it was let go."""
        if self.fd is None:
            assert not self.closed, "journal is closed"
            self.fd = os.open(self.path, _OPEN_FLAGS)
            self.reserved_end = self.size
        return self.fd

    def release_descriptor(self) -> None:
        """Let the descriptor go while the queue is idle (and the space set
        aside with it); the next write opens it again."""
        fd, self.fd = self.fd, None
        if fd is not None:
            self._unreserve(fd)
            os.close(fd)

    @property
    def spare(self) -> int:
        """Bytes that can be appended without allocating space."""
        return self.reserved_end - self.size

    def reserve(self, nbytes: int) -> None:
        """Make sure ``nbytes`` can be appended without allocating space.
        ``OSError`` (ENOSPC, EDQUOT) if the disk cannot give it; where the
        file system cannot set space aside at all, nothing is reserved and
        writes may still meet a full disk."""
        if self.reserved_end - self.size >= nbytes:
            return
        fd = self.reopen()
        for length in (max(nbytes, RESERVE_CHUNK), nbytes):  # a chunk, or just enough
            try:
                fallocate(fd, _FALLOC_FL_KEEP_SIZE, self.size, length)
            except OSError as error:
                if error.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    self.reserved_end = 1 << 62  # cannot: behave as before, without reservations
                    return
                if length == nbytes:
                    raise
            else:
                self.reserved_end = self.size + length
                return

    def _unreserve(self, fd: int) -> None:
        if self.reserved_end > self.size and self.reserved_end < 1 << 62:
            try:
                fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, self.size,
                          self.reserved_end - self.size)
            except OSError:
                pass
        self.reserved_end = self.size

    def append(self, chunks: Sequence[bytes]) -> None:
        """Write encoded frames at the end (one ``writev``; no fsync)."""
        fd = self.fd
        if fd is None:
            fd = self.reopen()
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
                os.ftruncate(fd, self.size)
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
            # The data and what reading it back needs (the size): not the
            # timestamps, whose update costs about a third more per round.
            os.fdatasync(fd)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise

    def truncate(self) -> None:
        """Drop every frame, keeping the header (the queue is empty)."""
        os.ftruncate(self.reopen(), self.header_size)
        self.size = self.reserved_end = self.header_size

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
        fd = os.open(temp, _OPEN_FLAGS | os.O_CREAT | os.O_TRUNC, self.mode)
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
        self.reserved_end = self.size
        if old is not None:
            os.close(old)
        failpoint("renamed")
        fsync_directory(self.path.parent)
        failpoint("dir-synced")

    def close(self) -> None:
        """Close for good: the descriptor and the space set aside (idempotent)."""
        self.closed = True
        self.release_descriptor()

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
