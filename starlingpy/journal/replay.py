"""Recovery: a journal's bytes in, the queue's contents out (sans-IO).

Replay is built for a million items in well under a second, so it never
loops in Python per record where it can avoid it:

* Each frame costs two ``zlib.crc32`` calls and a couple of ``bytes.count``
  calls on its op column. A frame holding only ADD and REMOVE records (the
  common case) is applied in bulk: the queue is FIFO and a REMOVE never
  meets an empty queue, so ``a`` adds and ``r`` removes in any order leave
  what "all adds, then ``r`` removes" leaves.
* Frames of one record (one put or take per write: what a crash leaves of
  a server with unpipelined clients) have a short path of their own. A
  one-REMOVE frame is always the same bytes (:data:`ONE_REMOVE_FRAME`), so
  one comparison replaces its checksums. A one-ADD frame costs two array
  appends (where it is, when it was made); consecutive ones form one
  *stretch* whose columns and data are gathered at the end with
  ``map``/``join`` at C speed. Every other record is applied by
  ``_apply_each``, the one place that gives a record its meaning.
* Items are not built while scanning. The queue state is kept as numbers:
  items are numbered in the order they were added, the waiting items are
  ``front`` (items put back at the head by ABORT, explicit) followed by the
  range ``[lo, hi)``. Only frames holding live items are decoded at the end,
  their columns read with ``array.frombytes`` and their data copied into
  compact :class:`ItemRun` blocks, so a recovered item costs its data plus a
  few bytes, not a Python object, until it reaches the front of its queue.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate, compress, repeat
from operator import add

from ..blocks import RUN_BYTES, RUN_ITEMS, ItemRun
from .codec import (
    ABORT,
    ADD,
    CLOSE,
    FLUSH,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    HELD_HEAD,
    HELD_SEQ,
    HOLD,
    MAX_OP,
    NOTE,
    ONE_REMOVE_FRAME,
    OP_NAMES,
    OPEN,
    OPENHELD,
    RECORD_FIXED,
    RECORD_FIXED_SIZE,
    REMOVE,
    UNHOLD,
    column,
    decode_held,
    little_endian,
)

_ONE_REMOVE_SIZE = len(ONE_REMOVE_FRAME)
(_ONE_REMOVE_CRC,) = struct.unpack_from("<I", ONE_REMOVE_FRAME)
_ADD_SELECT = bytes([1]) + bytes(255)  # translate table: ADD -> 1, any other op -> 0


@dataclass
class Damage:
    """Where and why a journal was cut. ``kind`` is ``"torn"`` (a write cut
    short at the end) or ``"corrupt"`` (a checksum or format error)."""
    kind: str
    offset: int
    reason: str


@dataclass
class Recovered:
    """What a journal holds, ready to become a queue.

    ``entries`` are the waiting items in queue order, each either a tuple
    ``(data, flags, expiry, added)`` or an :class:`ItemRun`. ``reopened``
    lists the transactions that were open when the journal ended: their items
    are at the head of ``entries``, in the order they were handed out
    (transaction ids only grow, and a rewrite keeps them, so this order
    survives compaction). ABORT records for them, in reverse order, make the
    journal agree. ``held`` are the held items (delayed or unique) by number,
    as :class:`~starlingpy.queue.Held` fields, open ones among them again;
    ``next_seq`` the number for the next.
    """
    entries: list = field(default_factory=list)
    reopened: list[int] = field(default_factory=list)
    next_xid: int = 1
    end: int = 0
    damage: Damage | None = None
    frames: int = 0
    items: int = 0
    bytes: int = 0
    notes: list[bytes] = field(default_factory=list)
    held: dict[int, tuple] = field(default_factory=dict)
    next_seq: int = 1


def replay(buf: bytes, start: int) -> Recovered:
    """Recover the queue held in ``buf`` (a whole journal file) whose frames
    start at offset ``start``. Never raises for damaged input: it stops at
    the first bad frame and says why in ``Recovered.damage``."""
    scan = _Scan(buf, start)
    scan.run()
    return scan.result()


class _Scan:
    def __init__(self, buf: bytes, start: int) -> None:
        self.buf = buf
        self.mv = memoryview(buf)
        self.start = start
        # One row per frame holding ADD records: where its body is, how many
        # records, the number of its first ADD, how many ADDs, its time, and
        # whether it holds only ADD/REMOVE (its data is then the ADDs' data).
        self.f_body = array("Q")
        self.f_count = array("I")
        self.f_first = array("Q")
        self.f_adds = array("I")
        self.f_added = array("d")
        self.f_end = array("Q")
        self.f_simple = bytearray()
        # One-ADD frames: body offset and time of each. A row above with
        # count 0 is a stretch of them: f_body is the index here of its first.
        self.s_body = array("Q")
        self.s_added = array("d")
        self.s_rows = 0  # how many of them are in rows so far
        self.lo = self.hi = 0
        self.front: deque[int] = deque()
        self.opened: dict[int, int] = {}
        self.held: dict[int, tuple] = {}  # held items by number (Held fields)
        self.opened_held: dict[int, tuple[int, tuple]] = {}  # xid -> (seq, Held fields)
        self.max_seq = 0
        self.max_xid = 0
        self.notes: list[bytes] = []
        self.frames = 0
        self.end = start
        self.damage: Damage | None = None

    def run(self) -> None:
        buf, mv = self.buf, self.mv
        crc32, unpack = zlib.crc32, FRAME_HEADER.unpack_from
        size = len(buf)
        last_header = size - FRAME_HEADER_SIZE
        pos = self.start
        front, max_xid = self.front, self.max_xid
        lo, hi = self.lo, self.hi
        s_body = self.s_body
        s_body_append, s_added_append = s_body.append, self.s_added.append
        frames = 0  # frames other than one-ADD ones (those are counted by s_body)
        while pos <= last_header:
            header_crc, count, data_len, added, body_crc = unpack(buf, pos)
            body = pos + FRAME_HEADER_SIZE
            verified = False
            if count == 1:  # one put or take per write: the short path
                if header_crc == _ONE_REMOVE_CRC and buf[pos:pos + _ONE_REMOVE_SIZE] == ONE_REMOVE_FRAME:
                    # Every one-REMOVE frame is these exact bytes: no crc needed.
                    if front:
                        front.popleft()
                    elif lo < hi:
                        lo += 1
                    frames += 1
                    pos += _ONE_REMOVE_SIZE
                    continue
                end = body + RECORD_FIXED_SIZE + data_len
                if (end <= size and crc32(buf[pos + 4:body]) == header_crc
                        and crc32(mv[body:end]) == body_crc):
                    op = buf[body]
                    if op == ADD:
                        s_body_append(body)
                        s_added_append(added)
                        hi += 1
                        pos = end
                        continue
                    verified = True  # another op: the general path applies it (_apply_each)
                # (damage: the general path checks again, to say which kind)
            if not verified:
                end = check_frame(buf, mv, pos)
                if end.__class__ is Damage:
                    self.damage = end
                    break
            ops = buf[body:body + count]
            adds = ops.count(ADD)
            removes = ops.count(REMOVE)
            if adds:
                self._close_stretch(hi)
            if adds + removes == count:
                if adds:
                    self._row(body, count, hi, adds, added, 1, end)
                    hi += adds
                while removes and front:
                    front.popleft()
                    removes -= 1
                lo = min(lo + removes, hi)
            else:
                if max(ops) > MAX_OP:
                    self.damage = Damage("corrupt", pos, f"unknown record type {max(ops)}")
                    break
                if max(ops) >= HOLD and (problem := held_record_problem(self.mv, ops, body)):
                    self.damage = Damage("corrupt", pos, problem)
                    break
                if adds:
                    self._row(body, count, hi, adds, added, 0, end)
                self.lo, self.hi, self.max_xid = lo, hi, max_xid
                self._apply_each(ops, body, count)
                lo, hi, max_xid = self.lo, self.hi, self.max_xid
            frames += 1
            pos = end
        if pos < size and self.damage is None:
            self.damage = _damage_at(mv, pos, "frame header cut short at the end of the file")
        self._close_stretch(hi)
        self.lo, self.hi, self.max_xid = lo, hi, max_xid
        self.frames = frames + len(s_body)
        self.end = pos if self.damage is None else self.damage.offset

    def _row(self, body: int, count: int, first: int, adds: int, added: float, simple: int,
             end: int) -> None:
        """Record a frame holding ADD records (see ``__init__``)."""
        self.f_body.append(body)
        self.f_count.append(count)
        self.f_first.append(first)
        self.f_adds.append(adds)
        self.f_added.append(added)
        self.f_simple.append(simple)
        self.f_end.append(end)

    def _close_stretch(self, hi: int) -> None:
        """Record the one-ADD frames not in a row yet (the last of them made
        item ``hi - 1``) as one row, with count 0."""
        count = len(self.s_body) - self.s_rows
        if count:
            self._row(self.s_rows, 0, hi - count, count, 0.0, 1, 0)
            self.s_rows = len(self.s_body)


    def _apply_each(self, ops: bytes, body: int, count: int) -> None:
        """Apply a frame record by record (frames with reliable reads, flushes
        or notes: rare, and short)."""
        args, lengths, data_at = record_columns(self.mv, body, count)
        front, opened = self.front, self.opened
        held, opened_held = self.held, self.opened_held
        expiries = column("d", self.mv[body + 9 * count:body + 17 * count]) if HOLD in ops else None
        for i, op in enumerate(ops):
            if op == ADD:
                self.hi += 1
            elif op == REMOVE or op == OPEN:
                index = self._pop_head()
                if op == OPEN:
                    self.max_xid = max(self.max_xid, args[i])
                    if index is not None:
                        opened[args[i]] = index
            elif op == CLOSE:
                if opened.pop(args[i], None) is None:
                    opened_held.pop(args[i], None)
            elif op == ABORT:
                index = opened.pop(args[i], None)
                if index is not None:
                    front.appendleft(index)
                elif args[i] in opened_held:
                    seq, fields = opened_held.pop(args[i])
                    held[seq] = fields
            elif op == FLUSH:
                front.clear()
                held.clear()
                self.lo = self.hi
            elif op == NOTE:
                self.notes.append(bytes(self.mv[data_at:data_at + lengths[i]]))
            elif op == HOLD:
                held[args[i]] = decode_held(self.mv[data_at:data_at + lengths[i]], expiries[i])
                self.max_seq = max(self.max_seq, args[i])
            elif op == UNHOLD:
                held.pop(args[i], None)
            elif op == OPENHELD:
                (seq,) = HELD_SEQ.unpack_from(self.mv, data_at)
                self.max_xid = max(self.max_xid, args[i])
                fields = held.pop(seq, None)
                if fields is not None:
                    opened_held[args[i]] = (seq, fields)
            data_at += lengths[i]

    def _pop_head(self) -> int | None:
        if self.front:
            return self.front.popleft()
        if self.lo < self.hi:
            self.lo += 1
            return self.lo - 1
        return None

    # -- building the queue from the numbers -------------------------------

    def result(self) -> Recovered:
        reopened = sorted(self.opened.items())  # in the order they were handed out
        held = self.held
        for seq, fields in self.opened_held.values():  # open held items are held again
            held[seq] = fields
        explicit = [index for _, index in reopened] + list(self.front)
        entries: list = [self._item(index) for index in explicit]
        entries += self._runs(self.lo, self.hi)
        items = len(explicit) + (self.hi - self.lo)
        size = sum(len(e[0]) if type(e) is tuple else len(e.data) for e in entries)
        return Recovered(entries=entries,
                         reopened=sorted([xid for xid, _ in reopened] + list(self.opened_held)),
                         next_xid=self.max_xid + 1, end=self.end, damage=self.damage,
                         frames=self.frames, items=items, bytes=size, notes=self.notes,
                         held=held, next_seq=self.max_seq + 1)

    def _frame_adds(self, k: int) -> tuple[array, array, array, list[int] | None, int]:
        """Frame ``k``'s ADD records: ``(lengths, flags, expiries, starts,
        data_at)``; ``starts`` is ``None`` when their data is contiguous from
        ``data_at``, else each one's offset."""
        body, count, mv = self.f_body[k], self.f_count[k], self.mv
        args = column("I", mv[body + count:body + 5 * count])
        lengths = column("I", mv[body + 5 * count:body + 9 * count])
        expiries = column("d", mv[body + 9 * count:body + 17 * count])
        data_at = body + RECORD_FIXED_SIZE * count
        if self.f_adds[k] == count:
            return lengths, args, expiries, None, data_at
        select = self.buf[body:body + count].translate(_ADD_SELECT)
        starts = None
        if not self.f_simple[k]:
            starts = list(compress(accumulate(lengths, initial=data_at), select))
        return (array("I", compress(lengths, select)), array("I", compress(args, select)),
                array("d", compress(expiries, select)), starts, data_at)

    def _item(self, index: int) -> tuple[bytes, int, float, float]:
        k = bisect_right(self.f_first, index) - 1
        j = index - self.f_first[k]
        if self.f_count[k] == 0:  # in a stretch of one-ADD frames
            n = self.f_body[k] + j
            body = self.s_body[n]
            _, flags, length, expiry = RECORD_FIXED.unpack_from(self.buf, body)
            at = body + RECORD_FIXED_SIZE
            return bytes(self.mv[at:at + length]), flags, expiry, self.s_added[n]
        lengths, flags, expiries, starts, data_at = self._frame_adds(k)
        at = starts[j] if starts is not None else data_at + sum(lengths[:j])
        return bytes(self.mv[at:at + lengths[j]]), flags[j], expiries[j], self.f_added[k]

    def _runs(self, lo: int, hi: int) -> list[ItemRun]:
        runs = _RunBuilder(self.buf, self.mv)
        if lo >= hi:
            return runs.runs
        k = bisect_right(self.f_first, lo) - 1
        index = lo
        f_body, f_count, f_first, f_adds = self.f_body, self.f_count, self.f_first, self.f_adds
        f_end, f_added = self.f_end, self.f_added
        while index < hi:
            first, adds, count = f_first[k], f_adds[k], f_count[k]
            if count == 0:  # a stretch of one-ADD frames
                runs.add_singles(self.s_body, self.s_added, f_body[k] + index - first,
                                 f_body[k] + adds)
            elif adds == count and first == index and adds <= RUN_ITEMS:
                # A whole frame of ADDs: its columns and data go in as they are.
                runs.add_frame(f_body[k], count, f_end[k], f_added[k])
            else:
                lengths, flags, expiries, starts, data_at = self._frame_adds(k)
                j = index - first
                if starts is None:
                    at = data_at + (sum(lengths[:j]) if j else 0)
                    runs.extend(lengths, flags, expiries, j, adds, at, f_added[k])
                else:
                    for i in range(j, adds):
                        runs.extend(lengths, flags, expiries, i, i + 1, starts[i], f_added[k])
            index = first + adds
            k += 1
        runs.finish()
        return runs.runs


class _RunBuilder:
    """Packs consecutive recovered items into :class:`ItemRun` blocks of at
    most ``RUN_ITEMS`` items / about ``RUN_BYTES`` bytes, so memory comes back
    block by block as the queue drains. Columns are gathered as byte slices
    and joined once per block."""

    def __init__(self, buf: bytes, mv: memoryview) -> None:
        self.buf = buf
        self.mv = mv
        self.runs: list[ItemRun] = []
        self._reset()

    def _reset(self) -> None:
        self.data: list = []
        self.lengths: list = []
        self.flags: list = []
        self.expiries: list = []
        self.starts = array("I")
        self.times = array("d")
        self.count = 0
        self.size = 0

    def add_singles(self, bodies: array, times: array, i: int, j: int) -> None:
        """Append the items of one-ADD frames ``bodies[i:j]`` (their body
        offsets; ``times`` their enqueue times). Their 16 fixed bytes (flags,
        length, expiry) and their data are gathered with ``map`` and
        ``join``, so no Python code runs per item."""
        buf = self.buf
        while i < j:
            take = min(j - i, RUN_ITEMS - self.count)
            at = bodies[i:i + take]
            rows = memoryview(b"".join(map(buf.__getitem__, map(
                slice, map(add, at, repeat(1)), map(add, at, repeat(RECORD_FIXED_SIZE))))))
            lengths = column("I", rows.cast("I")[1::4].tobytes())
            ends = list(accumulate(lengths))
            if self.size + ends[-1] > RUN_BYTES and take > 1:
                take = max(1, bisect_left(ends, RUN_BYTES - self.size))
                at, rows, lengths = at[:take], rows[:16 * take], lengths[:take]
            starts = list(map(add, at, repeat(RECORD_FIXED_SIZE)))
            self.data.append(b"".join(map(buf.__getitem__, map(
                slice, starts, map(add, starts, lengths)))))
            words = rows.cast("I")
            self.flags.append(words[0::4].tobytes())
            self.lengths.append(words[1::4].tobytes())
            self.expiries.append(rows.cast("d")[1::2].tobytes())
            self.starts.extend(range(self.count, self.count + take))
            self.times += times[i:i + take]
            self.count += take
            self.size += ends[take - 1]
            i += take
            if self.count >= RUN_ITEMS or self.size >= RUN_BYTES:
                self.finish()

    def add_frame(self, body: int, count: int, end: int, added: float) -> None:
        """Append a frame made only of ADD records, whole."""
        if self.count + count > RUN_ITEMS:
            self.finish()
        mv = self.mv
        data_at = body + RECORD_FIXED_SIZE * count
        self.flags.append(mv[body + count:body + 5 * count])
        self.lengths.append(mv[body + 5 * count:body + 9 * count])
        self.expiries.append(mv[body + 9 * count:data_at])
        self.data.append(mv[data_at:end])
        self.starts.append(self.count)
        self.times.append(added)
        self.count += count
        self.size += end - data_at
        if self.count >= RUN_ITEMS or self.size >= RUN_BYTES:
            self.finish()

    def extend(self, lengths: array, flags: array, expiries: array, start: int, stop: int,
               at: int, added: float) -> None:
        """Append items ``start..stop`` of a frame whose data is contiguous from ``at``."""
        while start < stop:
            take = min(stop - start, RUN_ITEMS - self.count)
            chunk = lengths[start:start + take]
            size = sum(chunk)
            if self.size + size > RUN_BYTES and take > 1:
                sums = list(accumulate(chunk))
                take = max(1, bisect_left(sums, RUN_BYTES - self.size))
                chunk = lengths[start:start + take]
                size = sums[take - 1]
            self.data.append(self.mv[at:at + size])
            self.lengths.append(little_endian(chunk))
            self.flags.append(little_endian(flags[start:start + take]))
            self.expiries.append(little_endian(expiries[start:start + take]))
            if not self.times or self.times[-1] != added:
                self.starts.append(self.count)
                self.times.append(added)
            self.count += take
            self.size += size
            at += size
            start += take
            if self.count >= RUN_ITEMS or self.size >= RUN_BYTES:
                self.finish()

    def finish(self) -> None:
        if not self.count:
            return
        flags = b"".join(self.flags)
        expiries = b"".join(self.expiries)
        self.runs.append(ItemRun(
            b"".join(self.data), column("I", b"".join(self.lengths)),
            None if flags.count(0) == len(flags) else column("I", flags),
            None if expiries.count(0) == len(expiries) else column("d", expiries),
            None if len(self.starts) == self.count else self.starts,  # a time per item
            self.times))
        self._reset()


def check_frame(buf, mv: memoryview, pos: int) -> int | Damage:
    """The end of the intact frame at ``pos``, or what is wrong with it.
    Replay's general path and :func:`dump` both judge frames here."""
    if len(buf) - pos < FRAME_HEADER_SIZE:
        return _damage_at(mv, pos, "frame header cut short at the end of the file")
    header_crc, count, data_len, _, body_crc = FRAME_HEADER.unpack_from(buf, pos)
    body = pos + FRAME_HEADER_SIZE
    if zlib.crc32(mv[pos + 4:body]) != header_crc:
        return _damage_at(mv, pos, "frame header checksum mismatch")
    end = body + count * RECORD_FIXED_SIZE + data_len
    if end > len(buf):
        return Damage("torn", pos, "last frame runs past the end of the file")
    if zlib.crc32(mv[body:end]) != body_crc:
        return Damage("corrupt", pos, "frame checksum mismatch")
    return end


def _damage_at(mv: memoryview, pos: int, reason: str) -> Damage:
    # Zeros to the end of the file are a tail the filesystem allocated but
    # the crash never let us write: torn, not corrupt.
    tail = len(mv) - pos
    zeros = bytes(mv[pos:]).count(0) == tail
    return Damage("torn" if tail < FRAME_HEADER_SIZE or zeros else "corrupt", pos, reason)


def held_record_problem(mv: memoryview, ops: bytes, body: int) -> str | None:
    """What is wrong with a frame's HOLD and OPENHELD records (their data
    has a shape of its own), or None."""
    _, lengths, at = record_columns(mv, body, len(ops))
    for op, length in zip(ops, lengths):
        if op == HOLD and (length < HELD_HEAD.size
                           or length < HELD_HEAD.size + mv[at + HELD_HEAD.size - 1]):
            return "HOLD record too short"
        if op == OPENHELD and length != HELD_SEQ.size:
            return "OPENHELD record of the wrong length"
        at += length
    return None


def record_columns(mv: memoryview, body: int, count: int) -> tuple[array, array, int]:
    """A frame's ``args`` and ``lengths`` columns, and where its data starts."""
    args = column("I", mv[body + count:body + 5 * count])
    lengths = column("I", mv[body + 5 * count:body + 9 * count])
    return args, lengths, body + RECORD_FIXED_SIZE * count


def dump(buf: bytes, start: int) -> str:
    """The records of a journal as one short line, for tests and debugging:
    ``"ADD(b'a') REMOVE OPEN#1 | ..."`` (``|`` between frames). A slow,
    record-by-record reader: the reference the fast replay must agree with.
    Stops at the first damaged frame, ending with ``!torn`` or ``!corrupt``."""
    frames: list[str] = []
    mv = memoryview(buf)
    pos = start
    while pos < len(buf):
        end = check_frame(buf, mv, pos)
        if end.__class__ is Damage:
            frames.append("!" + end.kind)
            break
        count = FRAME_HEADER.unpack_from(buf, pos)[1]
        body = pos + FRAME_HEADER_SIZE
        args, lengths, at = record_columns(mv, body, count)
        records = []
        for i, op in enumerate(buf[body:body + count]):
            name = OP_NAMES[op] if op < len(OP_NAMES) else f"OP{op}"
            if op in (ADD, NOTE):
                records.append(f"{name}({bytes(mv[at:at + lengths[i]])!r})")
            elif op == HOLD:
                records.append(f"{name}#{args[i]}({decode_held(mv[at:at + lengths[i]], 0.0)[0]!r})")
            elif op == OPENHELD:
                records.append(f"{name}#{args[i]}=#{HELD_SEQ.unpack_from(mv, at)[0]}")
            elif op in (OPEN, CLOSE, ABORT, UNHOLD):
                records.append(f"{name}#{args[i]}")
            else:
                records.append(name)
            at += lengths[i]
        frames.append(" ".join(records))
        pos = end
    return " | ".join(frames)
