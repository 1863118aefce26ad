"""Reply bytes the server sends, each ending in ``\\r\\n``.

Kept to constants and ``%``-formatting on bytes: this is the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable

STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
END = b"END\r\n"
DELETED = b"DELETED\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
OK = b"OK\r\n"


def value(key: bytes, flags: int, data: bytes, cas: bool = False) -> bytes:
    """``VALUE <key> <flags> <bytes>[ 0]\\r\\n<data>\\r\\n`` (the caller adds ``END``).

    ``cas`` is for ``gets``: a queue item has no version, so the field is 0.
    """
    if cas:
        return b"VALUE %s %d %d 0\r\n%s\r\n" % (key, flags, len(data), data)
    return b"VALUE %s %d %d\r\n%s\r\n" % (key, flags, len(data), data)


def _stat_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, bool):  # before int: bool is an int, and "True" is no number
        return b"1" if item else b"0"
    if isinstance(item, float):
        return b"%.6f" % item  # rusage style, never exponent notation
    return str(item).encode("utf-8", "surrogateescape")


def stats(pairs: Iterable[tuple[str | bytes, object]]) -> bytes:
    """``STAT <name> <value>`` lines then ``END``.

    Names may be ``str`` or ``bytes`` (queue names are bytes off the wire);
    values are ints, floats (six decimals), bools (1/0), bytes or anything
    whose ``str()`` is the value.
    """
    return stat_lines(pairs) + END


def stat_lines(pairs: Iterable[tuple[str | bytes, object]]) -> bytes:
    """The ``STAT`` lines of :func:`stats` alone (a reply made in parts)."""
    return b"".join([b"STAT %s %s\r\n" % (_stat_bytes(name), _stat_bytes(item))
                     for name, item in pairs])


def version(v: str) -> bytes:
    """``VERSION <v>``."""
    return b"VERSION %s\r\n" % v.encode("utf-8")
