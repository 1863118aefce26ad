"""Start-up of the journal store: the directory lock, and loading every
journal in the directory (ours, damaged ones, and Ruby Starling's, which
are taken over) into the store before any connection is accepted."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..names import (
    SUFFIX,
    is_journal_filename,
    name_from_older_filename,
    queue_filename,
    queue_name_from_filename,
)
from ..store.interface import StoreError
from .codec import JournalFormatError, RecordBuffer, decode_file_header, encode_file_header
from .file import TEMP_SUFFIX, JournalFile, broken_copy, fsync_directory
from .legacy import parse_legacy
from .replay import replay

if TYPE_CHECKING:
    from .store import JournalStore

log = logging.getLogger("starlingpy.journal")

LOCK_NAME = ".starlingpy.lock"  # starts with ".", which no encoded queue name does
LEGACY_DIR = ".starling-legacy"  # Starling journals we took over are moved here
LEGACY_NOTE = b"starling-import:"
MAX_FILE_HEADER = 8 + 2 + 0xFFFF + 4
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


class StartupError(Exception):
    """The queue directory cannot be used (unwritable, or locked by another
    server); the message says which and why."""


def load_directory(store: JournalStore) -> None:
    """Load every journal of the store's directory into it; take over Ruby
    Starling's journals; remove rewrites a crash interrupted."""
    directory = store.directory
    legacy: list[str] = []
    notes: dict[bytes, list[bytes]] = {}
    with os.scandir(directory) as listing:
        # (the file types come with the listing: no stat per file)
        files = sorted(entry.name for entry in listing if entry.is_file(follow_symlinks=False))
    for filename in files:  # our files are all regular; never follow a link out
        path = directory / filename
        name = queue_name_from_filename(filename)  # None for the hashed form too
        if SUFFIX + "." in filename and filename.endswith(TEMP_SUFFIX):
            # A rewrite that a crash interrupted before its rename: the
            # journal it was replacing is still whole.
            path.unlink(missing_ok=True)
            log.info("removed unfinished journal rewrite %s", path)
        elif name is not None or is_journal_filename(filename):
            _load_journal(store, path, name, notes)
        elif (older := name_from_older_filename(filename)) is not None:
            _load_journal(store, _rename_to_current(path, older), older, notes)
        elif not filename.startswith(".") and SUFFIX + "." not in filename:
            legacy.append(filename)  # maybe Ruby Starling's (it never made dotfiles)
    for filename in legacy:
        try:
            _take_over_legacy(store, directory / filename, filename, notes)
        except (OSError, StoreError) as exc:  # a full disk: it stays where it is, for next time
            log.error("could not take over the Starling journal %s now: %s", filename, exc)


def _load_journal(store: JournalStore, path: Path, name: bytes | None,
                  notes: dict[bytes, list[bytes]]) -> None:
    with _read_whole(path) as buf:
        try:
            header_name, header_size = decode_file_header(buf[:MAX_FILE_HEADER])
        except JournalFormatError as exc:
            _replace_unreadable(store, path, name, buf[:MAX_FILE_HEADER], str(exc))
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
    journal = JournalFile.open_existing(path, header_size, state.end, store.file_mode)
    queue = store.adopt(name, journal)
    queue.restore(state.entries, state.items, state.bytes, state.next_xid)
    queue.restore_held(state.held, state.next_seq)
    if state.held:
        store.watch_due(name)
    keeper = store.journal_of(name)
    keeper.frames = state.frames
    # Transactions open when the journal ended are back at the head: say so.
    for xid in reversed(state.reopened):
        keeper.records.abort(xid)
    if state.notes:
        notes[name] = state.notes
    log.info("queue %r: recovered %d items (%d bytes) from %d frames%s", name, state.items,
             state.bytes, state.frames,
             f"; {len(state.reopened)} open items put back at the head"
             if state.reopened else "")


def _rename_to_current(path: Path, name: bytes) -> Path:
    """A journal named the way older versions did (upper-case letters as they
    are, which a case-insensitive file system cannot tell apart) moves to
    today's name."""
    current = path.with_name(queue_filename(name))
    os.rename(path, current)
    fsync_directory(path.parent)
    log.info("renamed journal %s to %s (case-safe names)", path.name, current.name)
    return current


def _replace_unreadable(store: JournalStore, path: Path, name: bytes | None, buf: bytes,
                        why: str) -> None:
    """A journal without a valid header: empty if it is only a cut-short
    header (a crash right after creating it), else kept aside as broken."""
    torn = name is not None and encode_file_header(name).startswith(buf)
    if not torn:
        copy = broken_copy(path)
        log.error("journal %s is unreadable (%s); moved it to %s", path, why, copy)
        if name is None:
            path.unlink()
            return
    store.adopt(name, JournalFile.create(path, name, store.file_mode))
    if torn:
        log.warning("queue %r: journal header cut short; starting it empty", name)


def _take_over_legacy(store: JournalStore, path: Path, filename: str,
                      notes: dict[bytes, list[bytes]]) -> None:
    """Import a Ruby Starling journal into ours, then move it aside.

    The items and a note with the legacy file's digest go into our journal
    as ONE frame (all or nothing); the file is moved only after that is
    fsynced. A crash in between leaves the note, and the next start-up just
    moves the file aside instead of importing it twice.
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
    directory = store.directory
    if note in notes.get(name, ()):
        log.info("queue %r: Starling journal %s was already imported", name, path)
    else:
        queue = store.get_or_create(name)
        store.commit()  # what the queue had buffered goes first
        added = store.clock()
        batch = RecordBuffer()
        for expiry, data in parsed.items:
            batch.add(data, 0, float(expiry), added)
        batch.note(note)
        journal = store.journal_of(name).file
        journal.append(batch.encode_one_frame())
        journal.fsync()
        fsync_directory(directory)
        for expiry, data in parsed.items:
            queue.append_loaded(data, 0, float(expiry), added)
        if parsed.cut:
            log.warning("queue %r: Starling journal %s ends in a record cut short; "
                        "ignored its last %d bytes", name, path, parsed.cut)
        log.info("queue %r: imported %d items from Starling journal %s", name,
                 len(parsed.items), path)
    aside = directory / LEGACY_DIR
    aside.mkdir(exist_ok=True)
    target = aside / filename
    n = 1
    while target.exists():
        target = aside / f"{filename}.{n}"
        n += 1
    os.rename(path, target)
    fsync_directory(aside)
    fsync_directory(directory)
    log.info("moved the Starling journal to %s", target)


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


def lock_directory(path: Path) -> int:
    """Create ``path`` if needed, prove it writable, and take its lock."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create queue directory {path}: {exc.strerror or exc}") from exc
    if not path.is_dir():
        raise StartupError(f"queue path {path} is not a directory")
    probe = path / (LOCK_NAME + ".probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        os.close(fd)
        probe.unlink()
        lock_fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                          0o600)
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
    try:  # who holds it, for a human; a full disk must not stop the start
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"{os.getpid()}\n".encode())
    except OSError as exc:
        log.warning("could not write the pid into %s: %s", path / LOCK_NAME, exc)
    return lock_fd
