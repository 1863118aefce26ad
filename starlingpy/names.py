"""Queue names to file names, and back: the only code that does so.

A queue's journal file name is its name percent-encoded (every byte outside
``[a-z0-9_-]`` becomes ``%XX``, upper-case hex) plus :data:`SUFFIX`. No
encoded name holds ``/``, ``.`` or a NUL, so no name, however hostile
(``../x``, ``/etc/x``, bytes >= 0x80, ``.hidden``), can name a path outside
the queue directory or one of our own files (lock, temp, ``.broken``).
Upper-case letters are escaped too, so two names that differ only in case
(``Foo``, ``foo``) never share a file, even on a case-insensitive file
system (the only letters left in a name are lower-case ones and the hex
digits of escapes, which are always upper-case). Older versions kept
upper-case letters as they were: :func:`name_from_older_filename` reads such
names so the store can rename the files.

A name whose encoding would not fit in a file name (Linux allows 255 bytes;
we keep room for ``.tmp``/``.broken`` suffixes) is stored under
``%%`` + the SHA-256 of the name instead. ``%%`` never occurs in an encoding,
so the two forms cannot collide; such a journal records its queue name in its
file header, which is where the collection reads it back from.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote_to_bytes

SUFFIX = ".spq"
"""Marks the journals we write (``.`` is always escaped, so it cannot be part
of an encoded name)."""

HASHED_PREFIX = "%%"
MAX_FILENAME = 240  # NAME_MAX is 255; leave room for ".tmp" / ".broken.N"

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
# Every byte's spelling in a file name, precomputed: encoding is a join.
_SPELLING = tuple(chr(b) if b in _SAFE else f"%{b:02X}" for b in range(256))
_OLDER_SPELLING = tuple(chr(b) if chr(b).isascii() and chr(b).isupper() else _SPELLING[b]
                        for b in range(256))
_ENCODED = re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+")
_HASHED = re.compile(r"%%[0-9a-f]{64}")


def queue_filename(name: bytes) -> str:
    """The journal file name (no directory part) for queue ``name``.

    Raises ``ValueError`` for an empty name.
    """
    if not name:
        raise ValueError("a queue name cannot be empty")
    encoded = "".join([_SPELLING[b] for b in name])
    if len(encoded) + len(SUFFIX) <= MAX_FILENAME:
        return encoded + SUFFIX
    return HASHED_PREFIX + hashlib.sha256(name).hexdigest() + SUFFIX


def queue_name_from_filename(filename: str) -> bytes | None:
    """The queue name that ``filename`` was made from by :func:`queue_filename`.

    ``None`` when the file is not one of our journals, and also for the hashed
    form of very long names (its name is only in the journal's header; see
    :func:`is_journal_filename`). Accepts only the canonical spelling, so
    ``queue_filename(queue_name_from_filename(f)) == f`` whenever it returns
    a name.
    """
    if not filename.endswith(SUFFIX):
        return None
    stem = filename[: -len(SUFFIX)]
    if not _ENCODED.fullmatch(stem):
        return None
    name = unquote_to_bytes(stem)  # the pattern above admits only [A-Za-z0-9_-] and %XX
    return name if queue_filename(name) == filename else None


def name_from_older_filename(filename: str) -> bytes | None:
    """The queue name of a journal named as older versions did (upper-case
    letters unescaped), where that differs from today's name; else None."""
    if not filename.endswith(SUFFIX) or not _ENCODED.fullmatch(filename[: -len(SUFFIX)]):
        return None
    name = unquote_to_bytes(filename[: -len(SUFFIX)])
    older = "".join([_OLDER_SPELLING[b] for b in name]) + SUFFIX
    return name if older == filename and queue_filename(name) != filename else None


def is_journal_filename(filename: str) -> bool:
    """True for every file name :func:`queue_filename` can produce."""
    if queue_name_from_filename(filename) is not None:
        return True
    return filename.endswith(SUFFIX) and bool(_HASHED.fullmatch(filename[: -len(SUFFIX)]))

