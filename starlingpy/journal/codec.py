"""The journal's on-disk format, sans-IO: bytes in, bytes out.

Journal file format
===================

A journal file is a file header followed by zero or more frames. All
integers are little-endian; ``crc`` is CRC-32 (``zlib.crc32``).

::

    file         := file_header frame*
    file_header  := MAGIC name_len:u16 name[name_len] header_crc:u32
                    MAGIC = 89 'S' 'P' 'Q' 'J' 'N' 'L' 0A  (8 bytes)
                    header_crc covers MAGIC, name_len and name
    frame        := frame_header body
    frame_header := header_crc:u32 count:u32 data_len:u32 added:f64 body_crc:u32
                    (24 bytes; header_crc covers the 20 bytes after it)
    body         := ops[count]:u8 args[count]:u32 lengths[count]:u32
                    expiries[count]:f64 data[data_len]
                    (body_crc covers all of it)

A frame is one batch of records, written with a single ``write``. Records are
stored by column, so a reader gets each field of every record of a frame with
one C-level copy (``array.frombytes``) instead of a Python loop per record.
Record ``i`` is ``(ops[i], args[i], lengths[i], expiries[i])`` and its data is
the ``lengths[i]`` bytes of ``data`` that follow those of records ``0..i-1``;
``sum(lengths) == data_len``. ``added`` is the unix time at which the first
item of the frame was enqueued; every item of the frame is taken to have been
added then.

Operations (``ops[i]``):

====  =======  ===================================================================
code  name     meaning
====  =======  ===================================================================
0     ADD      append an item: ``args`` = flags, ``expiries`` = absolute unix time
               (0 = never), data = the item
1     REMOVE   drop the head item (taken, or expired)
2     OPEN     the head item becomes open transaction ``args`` (a reliable read)
3     CLOSE    open transaction ``args`` is confirmed: the item is gone
4     ABORT    open transaction ``args``'s item goes back to the head
5     FLUSH    every waiting item is dropped (open transactions stay)
6     NOTE     no effect on items; data is an annotation (legacy import marks)
7     HOLD     append a *held* item (one put with ``/delay=`` or ``/unique=``) as
               number ``args``: ``expiries`` = its expiry, data =
               ``flags:u32 due:f64 added:f64 unique_len:u8 unique[unique_len]``
               followed by the item (``due``: unix time before which no take
               sees it; ``unique_len`` 0: no unique id)
8     UNHOLD   held item ``args`` is dropped (taken, or expired)
9     OPENHELD held item number ``seq`` (data = ``seq:u32``) becomes open
               transaction ``args``; CLOSE and ABORT then name ``args``, and an
               ABORT makes it held item ``seq`` again
====  =======  ===================================================================

Non-ADD records have ``expiries`` 0 (HOLD: the item's expiry) and, except
NOTE, HOLD and OPENHELD, ``lengths`` 0. Held items are numbered per queue
(numbers only grow, wrapping at 2**32 like transaction ids, and a rewrite
keeps them), so a take may name one out of FIFO order: that is how a delayed
item keeps its place in arrival order once due. FLUSH drops held items too.

Reading (see :mod:`starlingpy.journal.replay`), frame by frame:

* fewer than 24 bytes left, a header that is all zero bytes to the end of the
  file, or a valid header whose body runs past the end of the file: a *torn
  tail* (a write cut short by a crash). The file is cut there, with a warning.
* a header or body whose crc does not match, or an unknown op code: *corrupt*.
  The file is copied to ``<file>.broken`` and then cut at the last good frame,
  with an error. Nothing after that point is trusted, so garbage is never
  handed out as an item.
"""

from __future__ import annotations

import functools
import struct
import sys
import zlib
from array import array

MAGIC = b"\x89SPQJNL\n"
_NAME_LEN = struct.Struct("<H")
_CRC = struct.Struct("<I")
FRAME_HEADER = struct.Struct("<IIIdI")
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 24
_FRAME_REST = struct.Struct("<IIdI")  # the header after its crc: what the crc covers
RECORD_FIXED = struct.Struct("<BIId")  # op, arg, length, expiry: one record's columns
RECORD_FIXED_SIZE = RECORD_FIXED.size  # 17: bytes per record before data

ADD, REMOVE, OPEN, CLOSE, ABORT, FLUSH, NOTE, HOLD, UNHOLD, OPENHELD = range(10)
MAX_OP = OPENHELD
OP_NAMES = ("ADD", "REMOVE", "OPEN", "CLOSE", "ABORT", "FLUSH", "NOTE", "HOLD", "UNHOLD",
            "OPENHELD")
HELD_HEAD = struct.Struct("<IddB")  # a HOLD record's data before the item: flags, due, added, id length
HELD_SEQ = struct.Struct("<I")  # an OPENHELD record's data

# One frame stays well inside u32 fields and a sane single write.
MAX_FRAME_RECORDS = 1 << 16
MAX_FRAME_DATA = 64 << 20

_LITTLE = sys.byteorder == "little"
assert array("I").itemsize == 4 and array("d").itemsize == 8


class JournalFormatError(Exception):
    """A file does not start with a valid journal header."""


def encode_file_header(name: bytes) -> bytes:
    """The header of a journal for queue ``name``."""
    head = MAGIC + _NAME_LEN.pack(len(name)) + name
    return head + _CRC.pack(zlib.crc32(head))


def decode_file_header(buf: bytes) -> tuple[bytes, int]:
    """``(queue name, header length)`` of a journal held in ``buf``.

    Raises :class:`JournalFormatError` if ``buf`` does not start with a
    complete, intact header.
    """
    if not buf.startswith(MAGIC):
        raise JournalFormatError("not a starlingpy journal (bad magic)")
    if len(buf) < len(MAGIC) + 2:
        raise JournalFormatError("journal header cut short")
    (name_len,) = _NAME_LEN.unpack_from(buf, len(MAGIC))
    end = len(MAGIC) + 2 + name_len
    if len(buf) < end + 4:
        raise JournalFormatError("journal header cut short")
    (crc,) = _CRC.unpack_from(buf, end)
    if zlib.crc32(memoryview(buf)[:end]) != crc:
        raise JournalFormatError("journal header checksum mismatch")
    return bytes(buf[len(MAGIC) + 2:end]), end + 4


def little_endian(column: array) -> bytes:
    """The bytes of an array column, little-endian whatever the host."""
    if _LITTLE:
        return column.tobytes()
    swapped = array(column.typecode, column)
    swapped.byteswap()
    return swapped.tobytes()


def column(typecode: str, raw) -> array:
    """An array column read from little-endian bytes."""
    values = array(typecode)
    values.frombytes(raw)
    if not _LITTLE:
        values.byteswap()
    return values


def encode_frame(count: int, ops: bytes, args: bytes, lengths: bytes, expiries: bytes,
                 data: list, data_len: int, added: float) -> list[bytes]:
    """One frame as ``[header, body]`` (ready for ``os.writev``).

    ``ops``/``args``/``lengths``/``expiries`` are the little-endian columns of
    ``count`` records; ``data`` is a list of bytes-like parts totalling
    ``data_len`` bytes.
    """
    body = b"".join([ops, args, lengths, expiries, *data])
    rest = _FRAME_REST.pack(count, data_len, added, zlib.crc32(body))
    return [_CRC.pack(zlib.crc32(rest)) + rest, body]


@functools.lru_cache(maxsize=256)
def _removes_frame(count: int) -> list[bytes]:
    return encode_frame(count, bytes([REMOVE]) * count, bytes(4 * count), bytes(4 * count),
                        bytes(8 * count), [], 0, 0.0)


_ONE_REMOVE = _removes_frame(1)
ONE_REMOVE_FRAME = b"".join(_ONE_REMOVE)  # every frame holding one REMOVE is these bytes

REMOVE_RECORD = (REMOVE, 0, b"", 0.0)


class RecordBuffer:
    """Records waiting to be written: a queue's :class:`~starlingpy.queue.ChangeLog`
    as journal records, encoded as frames when the store writes them.

    Each record is buffered as one tuple ``(op, arg, data, expiry)`` (a
    single C-level append); :meth:`encode` turns them into columns with
    ``zip`` at C speed, or takes the one-record short path. ``on_first`` is
    called when the buffer goes from empty to not empty (the store lists the
    journals it must write).
    """

    __slots__ = ("added", "on_first", "records")

    def __init__(self, on_first=None) -> None:
        self.records: list[tuple[int, int, bytes, float]] = []
        self.added: float | None = None  # enqueue time of the first ADD buffered
        self.on_first = on_first or _nothing

    def add(self, data: bytes, flags: int, expiry: float, added: float) -> None:
        """Buffer an ADD record."""
        records = self.records
        if not records:
            self.on_first()
        if self.added is None:
            self.added = added
        records.append((ADD, flags, data, expiry))

    def remove(self) -> None:
        if not self.records:
            self.on_first()
        self.records.append(REMOVE_RECORD)

    def op(self, code: int, arg: int = 0, note: bytes = b"") -> None:
        """Buffer a record other than ADD."""
        if not self.records:
            self.on_first()
        self.records.append((code, arg, note, 0.0))

    def open(self, xid: int) -> None:
        self.op(OPEN, xid)

    def close(self, xid: int) -> None:
        self.op(CLOSE, xid)

    def abort(self, xid: int) -> None:
        self.op(ABORT, xid)

    def flush(self) -> None:
        self.op(FLUSH)

    def note(self, text: bytes) -> None:
        self.op(NOTE, 0, text)

    def add_held(self, seq: int, item) -> None:
        """Buffer a HOLD record for ``item`` (a :class:`~starlingpy.queue.Held`)."""
        unique = item.unique or b""
        if not self.records:
            self.on_first()
        if self.added is None:
            self.added = item.added
        head = HELD_HEAD.pack(item.flags, item.due, item.added, len(unique))
        self.records.append((HOLD, seq, head + unique + item.data, item.expiry))

    def remove_held(self, seq: int) -> None:
        self.op(UNHOLD, seq)

    def open_held(self, xid: int, seq: int) -> None:
        self.op(OPENHELD, xid, HELD_SEQ.pack(seq))

    def encode(self) -> list[bytes]:
        """Every buffered record as frames (``[header, body, header, body...]``)."""
        records = self.records
        count = len(records)
        if count == 1:
            # Almost every write is one put or one take: its own short path
            # (the same bytes as encode_frame makes).
            op, arg, data, expiry = records[0]
            if op == REMOVE:
                return _ONE_REMOVE
            size = len(data)
            body = RECORD_FIXED.pack(op, arg, size, expiry) + data
            rest = _FRAME_REST.pack(1, size, self.added or 0.0, zlib.crc32(body))
            return [_CRC.pack(zlib.crc32(rest)) + rest, body]
        ops, args, data, expiries = zip(*records)
        ops = bytes(ops)
        if self.added is None and ops.count(REMOVE) == count:
            return _removes_frame(count)  # takes only: the frame depends on the count alone
        lengths = array("I", map(len, data))
        data_len = sum(lengths)
        if count > MAX_FRAME_RECORDS or data_len > MAX_FRAME_DATA:
            return self._encode_split(ops, array("I", args), lengths, array("d", expiries), data)
        return encode_frame(count, ops, little_endian(array("I", args)), little_endian(lengths),
                            little_endian(array("d", expiries)), list(data), data_len,
                            self.added or 0.0)

    def encode_one_frame(self) -> list[bytes]:
        """Every buffered record as a single frame, however large: written
        with one ``write``, it is all or nothing after a crash."""
        ops, args, data, expiries = zip(*self.records)
        lengths = array("I", map(len, data))
        return encode_frame(len(ops), bytes(ops), little_endian(array("I", args)),
                            little_endian(lengths), little_endian(array("d", expiries)),
                            list(data), sum(lengths), self.added or 0.0)

    def _encode_split(self, ops: bytes, args: array, lengths: array, expiries: array,
                      data: tuple) -> list[bytes]:
        chunks: list[bytes] = []
        start = 0
        count = len(ops)
        while start < count:
            end, size = start, 0
            while end < count and end - start < MAX_FRAME_RECORDS:
                length = lengths[end]
                if end > start and size + length > MAX_FRAME_DATA:
                    break
                size += length
                end += 1
            chunks += encode_frame(end - start, ops[start:end], little_endian(args[start:end]),
                                   little_endian(lengths[start:end]),
                                   little_endian(expiries[start:end]), list(data[start:end]),
                                   size, self.added or 0.0)
            start = end
        return chunks

    def clear(self) -> None:
        """Forget every buffered record (after they were written, or dropped)."""
        self.records.clear()
        self.added = None


def _nothing() -> None:
    pass


def decode_held(record: bytes | memoryview, expiry: float) -> tuple:
    """A HOLD record's data (and expiry) as the fields of a
    :class:`~starlingpy.queue.Held`: ``(data, flags, expiry, added, due, unique)``."""
    flags, due, added, unique_len = HELD_HEAD.unpack_from(record)
    at = HELD_HEAD.size + unique_len
    unique = bytes(record[HELD_HEAD.size:at]) if unique_len else None
    return bytes(record[at:]), flags, expiry, added, due, unique
