"""The record codec and the fast replay, on bytes: round trips, and one test
per way a journal can be damaged."""

import struct
import zlib
from array import array

import pytest

from starlingpy.blocks import ItemRun
from starlingpy.journal.codec import (
    ABORT,
    CLOSE,
    FLUSH,
    FRAME_HEADER_SIZE,
    NOTE,
    OPEN,
    REMOVE,
    JournalFormatError,
    RecordBuffer,
    decode_file_header,
    encode_file_header,
    encode_frame,
)
from starlingpy.journal.replay import dump, replay


def journal(*batches) -> tuple[bytes, int]:
    """A journal file's bytes from batches of records: ("add", data[, flags,
    expiry]) or (op, arg)."""
    header = encode_file_header(b"q")
    out = [header]
    for batch in batches:
        buf = RecordBuffer()
        for record in batch:
            if record[0] == "add":
                data, flags, expiry = (list(record[1:]) + [0, 0.0])[:3]
                buf.add(data, flags, expiry, 100.0)
            else:
                buf.op(*record)
        out += buf.encode()
    return b"".join(out), len(header)


def items(state) -> list[tuple[bytes, int, float]]:
    """Waiting items of a replay result, materialised."""
    out = []
    for entry in state.entries:
        if isinstance(entry, ItemRun):
            at = 0
            for i in range(len(entry.lengths)):
                n = entry.lengths[i]
                out.append((entry.data[at:at + n],
                            entry.flags[i] if entry.flags is not None else 0,
                            entry.expiries[i] if entry.expiries is not None else 0.0))
                at += n
        else:
            out.append(entry[:3])
    return out


def datas(state) -> list[bytes]:
    return [data for data, _, _ in items(state)]


def test_file_header_round_trip():
    header = encode_file_header(b"\xffname")
    assert decode_file_header(header + b"rest") == (b"\xffname", len(header))


@pytest.mark.parametrize("damage", ["magic", "crc", "short"])
def test_bad_file_header_is_refused(damage):
    header = bytearray(encode_file_header(b"name"))
    if damage == "magic":
        header[0] ^= 1
    elif damage == "crc":
        header[12] ^= 1
    else:
        header = header[:11]
    with pytest.raises(JournalFormatError):
        decode_file_header(bytes(header))


def test_round_trip_of_adds_with_flags_expiry_and_empty_data():
    buf, start = journal([("add", b"a", 7, 123.5), ("add", b""), ("add", b"c" * 300, 2**32 - 1)])
    state = replay(buf, start)
    assert state.damage is None and state.end == len(buf)
    assert items(state) == [(b"a", 7, 123.5), (b"", 0, 0.0), (b"c" * 300, 2**32 - 1, 0.0)]
    assert state.items == 3 and state.bytes == 301
    assert dump(buf, start) == f"ADD(b'a') ADD(b'') ADD({b'c' * 300!r})"


def test_bulk_and_record_by_record_paths_agree():
    buf, start = journal(
        [("add", b"a"), ("add", b"b"), ("add", b"c")],
        [(REMOVE,), ("add", b"d"), (REMOVE,)],          # ADD/REMOVE only: bulk path
        [(OPEN, 1), ("add", b"e"), (OPEN, 2)],           # opens c, d
        [(ABORT, 2), (CLOSE, 1), (NOTE, 0, b"hello")],   # d back at head, c gone
    )
    state = replay(buf, start)
    assert datas(state) == [b"d", b"e"]
    assert state.reopened == [] and state.next_xid == 3
    assert state.notes == [b"hello"]
    assert dump(buf, start) == ("ADD(b'a') ADD(b'b') ADD(b'c') | REMOVE ADD(b'd') REMOVE | "
                                "OPEN#1 ADD(b'e') OPEN#2 | ABORT#2 CLOSE#1 NOTE(b'hello')")


def test_open_transactions_at_the_end_come_back_first_in_the_order_handed_out():
    buf, start = journal(
        [("add", x) for x in (b"a", b"b", b"c", b"d")],
        [(OPEN, 5), (OPEN, 6), (ABORT, 5), (OPEN, 7), (REMOVE,)],
    )
    state = replay(buf, start)
    # After ABORT 5, a is back at the head; OPEN 7 takes it again and REMOVE
    # takes c. Left open: 6 (b), then 7 (a): they return ahead of d in that order.
    assert datas(state) == [b"b", b"a", b"d"]
    assert state.reopened == [6, 7]


def test_flush_drops_waiting_items_but_not_open_ones():
    buf, start = journal([("add", b"a"), ("add", b"b"), (OPEN, 1), (FLUSH,), ("add", b"c")])
    state = replay(buf, start)
    assert datas(state) == [b"a", b"c"] and state.reopened == [1]


def test_many_frames_build_runs_that_split_and_keep_order():
    batches = [[("add", b"%06d" % (i * 10 + j)) for j in range(10)] for i in range(1000)]
    batches.append([(REMOVE,)] * 15)
    buf, start = journal(*batches)
    state = replay(buf, start)
    assert datas(state) == [b"%06d" % i for i in range(15, 10000)]
    assert sum(isinstance(e, ItemRun) for e in state.entries) >= 2


def test_big_batches_are_split_into_frames(monkeypatch):
    from starlingpy.journal import codec
    monkeypatch.setattr(codec, "MAX_FRAME_RECORDS", 4)
    monkeypatch.setattr(codec, "MAX_FRAME_DATA", 10)
    buf = RecordBuffer()
    for i in range(9):
        buf.add(b"%d" % i * 3, i, 0.0, 1.0)
    buf.op(REMOVE)
    chunks = buf.encode()
    assert len(chunks) > 2
    header = encode_file_header(b"q")
    state = replay(header + b"".join(chunks), len(header))
    assert datas(state) == [b"%d" % i * 3 for i in range(1, 9)]
    assert [f for _, f, _ in items(state)] == list(range(1, 9))


# -- damage: one test per way -------------------------------------------------

def three_frames():
    return journal([("add", b"one")], [("add", b"two")], [("add", b"three")])


def frame_offsets(buf, start):
    offsets = []
    pos = start
    while pos < len(buf):
        offsets.append(pos)
        _, count, data_len, _, _ = struct.unpack_from("<IIIdI", buf, pos)
        pos += FRAME_HEADER_SIZE + 17 * count + data_len
    return offsets


def test_truncated_trailing_frame_is_a_torn_tail_at_every_cut():
    buf, start = three_frames()
    last = frame_offsets(buf, start)[-1]
    for cut in range(last + 1, len(buf)):
        state = replay(buf[:cut], start)
        assert datas(state) == [b"one", b"two"], cut
        assert state.damage.kind == "torn" and state.end == last


def test_zero_filled_tail_is_torn_not_corrupt():
    buf, start = three_frames()
    state = replay(buf + bytes(4096), start)
    assert datas(state) == [b"one", b"two", b"three"]
    assert state.damage.kind == "torn" and state.end == len(buf)


def test_bad_length_in_a_header_is_corrupt():
    buf, start = three_frames()
    second = frame_offsets(buf, start)[1]
    bad = bytearray(buf)
    struct.pack_into("<I", bad, second + 8, 10**6)  # data_len, far past the end
    state = replay(bytes(bad), start)
    assert datas(state) == [b"one"]
    assert state.damage.kind == "corrupt" and state.end == second


def test_checksum_mismatch_mid_file_cuts_at_last_good_frame():
    buf, start = three_frames()
    second = frame_offsets(buf, start)[1]
    bad = bytearray(buf)
    bad[second + FRAME_HEADER_SIZE + 17 + 1] ^= 0x40  # a byte of b"two"
    state = replay(bytes(bad), start)
    assert datas(state) == [b"one"]
    assert state.damage.kind == "corrupt" and state.end == second
    assert dump(bytes(bad), start) == "ADD(b'one') | !corrupt"


def test_flipped_byte_in_the_last_record_is_never_returned():
    buf, start = three_frames()
    last = frame_offsets(buf, start)[-1]
    for offset in range(last, len(buf)):
        bad = bytearray(buf)
        bad[offset] ^= 0x01
        state = replay(bytes(bad), start)
        assert datas(state) == [b"one", b"two"], offset
        assert state.damage.kind == "corrupt" and state.end == last


def test_unknown_op_with_valid_checksums_is_corrupt():
    header = encode_file_header(b"q")
    frame = encode_frame(1, bytes([200]), bytes(4), bytes(4), bytes(8), [], 0, 0.0)
    good = RecordBuffer()
    good.add(b"ok", 0, 0.0, 0.0)
    buf = header + b"".join(good.encode()) + b"".join(frame)
    state = replay(buf, len(header))
    assert datas(state) == [b"ok"] and state.damage.kind == "corrupt"


def test_columns_are_little_endian_on_disk():
    buf = RecordBuffer()
    buf.add(b"x", 0x01020304, 0.0, 0.0)
    header, body = buf.encode()
    assert body[1:5] == bytes([4, 3, 2, 1])
    assert array("I", body[5:9])[0] == 1
    header_crc, count, data_len, _, body_crc = struct.unpack("<IIIdI", header)
    assert (count, data_len) == (1, 1)
    assert zlib.crc32(body) == body_crc and zlib.crc32(header[4:]) == header_crc


def test_one_huge_frame_is_split_into_bounded_runs():
    from starlingpy.journal.replay import RUN_BYTES, RUN_ITEMS
    batch = [("add", b"%05d" % i + b"." * 995, i) for i in range(3000)]
    batch += [(REMOVE,)] * 3
    buf, start = journal(batch, [("add", b"small%d" % i) for i in range(RUN_ITEMS + 10)])
    state = replay(buf, start)
    runs = [e for e in state.entries if isinstance(e, ItemRun)]
    assert all(len(r.data) <= RUN_BYTES + 1000 and len(r.lengths) <= RUN_ITEMS for r in runs)
    got = items(state)
    assert [(d[:5], f) for d, f, _ in got[:2997]] == [(b"%05d" % i, i) for i in range(3, 3000)]
    assert [d for d, _, _ in got[2997:]] == [b"small%d" % i for i in range(RUN_ITEMS + 10)]


def test_one_record_frames_mixed_with_larger_ones_keep_every_column():
    batches = []
    expected = []
    for i in range(300):
        if i % 50 == 49:
            records = [("add", b"m%d-%d" % (i, j), j, 5.0 + j) for j in range(3)]
        else:
            records = [("add", b"s%d" % i, i, float(i % 3) * 1e9)]
        batches.append(records)
        expected += [(r[1], r[2], r[3]) for r in records]
    batches.append([(REMOVE,)])
    buf, start = journal(*batches)
    assert items(replay(buf, start)) == expected[1:]


# -- one-record frames: the short encoder and the replay stretches -------------

@pytest.mark.parametrize("record", [(0, 7, b"data", 12.5), (0, 0, b"", 0.0),
                                    (REMOVE, 0, b"", 0.0), (OPEN, 2**32 - 1, b"", 0.0),
                                    (NOTE, 0, b"note", 0.0)])
def test_one_record_encoder_makes_the_general_encoders_bytes(record):
    op, arg, data, expiry = record
    general = encode_frame(1, bytes([op]), struct.pack("<I", arg), struct.pack("<I", len(data)),
                           struct.pack("<d", expiry), [data], len(data), 99.25 if op == 0 else 0.0)
    buf = RecordBuffer()
    if op == 0:
        buf.add(data, arg, expiry, 99.25)
    else:
        buf.op(op, arg, data)
    assert buf.encode() == general


class ReferenceQueue:
    """Journal semantics, record by record, in the plainest Python."""

    def __init__(self) -> None:
        self.waiting: list[tuple[bytes, int, float]] = []
        self.opened: dict[int, tuple[bytes, int, float]] = {}

    def apply(self, record) -> None:
        op = record[0]
        if op == "add":
            self.waiting.append(record[1:])
        elif op in (REMOVE, OPEN) and self.waiting:
            item = self.waiting.pop(0)
            if op == OPEN:
                self.opened[record[1]] = item
        elif op == CLOSE:
            self.opened.pop(record[1], None)
        elif op == ABORT and record[1] in self.opened:
            self.waiting.insert(0, self.opened.pop(record[1]))
        elif op == FLUSH:
            self.waiting.clear()

    def after_restart(self) -> list[tuple[bytes, int, float]]:
        return [self.opened[x] for x in sorted(self.opened)] + self.waiting


@pytest.fixture(params=["default", "tiny-runs"])
def run_sizes(request, monkeypatch):
    if request.param == "tiny-runs":
        from starlingpy.journal import replay as replay_module
        monkeypatch.setattr(replay_module, "RUN_ITEMS", 5)
        monkeypatch.setattr(replay_module, "RUN_BYTES", 40)


MIXES = {  # cumulative chances of: add, remove, open; the rest is close/abort
    "puts-and-takes": (0.55, 0.85, 0.92),
    "reliable-reads": (0.35, 0.45, 0.70),
}


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("seed", range(6))
def test_mostly_one_record_frames_replay_like_the_reference(seed, mix, run_sizes):
    import random
    rng = random.Random(seed)
    add_below, remove_below, open_below = MIXES[mix]
    ref = ReferenceQueue()
    batches, xid, n = [], 0, 0
    for _ in range(600):
        batch = []
        for _ in range(1 if rng.random() < 0.85 else rng.randrange(2, 6)):
            roll = rng.random()
            if roll < add_below or not ref.waiting:
                record = ("add", b"%d:" % n + b"z" * rng.randrange(0, 20),
                          rng.choice([0, 0, n]), rng.choice([0.0, 0.0, 1e9 + n]))
                n += 1
            elif roll < remove_below:
                record = (REMOVE,)
            elif roll < open_below:
                xid += 1
                record = (OPEN, xid)
            elif ref.opened:
                record = (rng.choice([CLOSE, ABORT, ABORT]), rng.choice(list(ref.opened)))
            else:
                record = (FLUSH,) if rng.random() < 0.2 else (REMOVE,)
            ref.apply(record)
            batch.append(record)
        batches.append(batch)
    buf, start = journal(*batches)
    state = replay(buf, start)
    assert state.damage is None and state.end == len(buf)
    assert items(state) == ref.after_restart()
    assert state.reopened == sorted(ref.opened) and state.next_xid == xid + 1
    assert state.items == len(ref.after_restart())
    assert state.bytes == sum(len(d) for d, _, _ in ref.after_restart())


def test_a_stretch_of_one_record_frames_cut_by_damage_keeps_what_came_before():
    buf, start = journal(*[[("add", b"item%d" % i)] for i in range(10)])
    frame = (len(buf) - start) // 10
    damaged = bytearray(buf)
    damaged[start + 6 * frame + FRAME_HEADER_SIZE + 20] ^= 0x40  # item 6's data
    state = replay(bytes(damaged), start)
    assert datas(state) == [b"item%d" % i for i in range(6)]
    assert state.damage.kind == "corrupt" and state.end == start + 6 * frame
    state = replay(buf[:-3], start)  # the last write cut short
    assert datas(state) == [b"item%d" % i for i in range(9)]
    assert state.damage.kind == "torn" and state.end == start + 9 * frame


@pytest.mark.parametrize("where", [0, 4, 30, 40])  # header crc, count, body op, body expiry
def test_a_damaged_one_remove_frame_is_corrupt_not_skipped(where):
    buf, start = journal([("add", b"a")], [("add", b"b")], [(REMOVE,)], [("add", b"c")])
    remove_at = start + 2 * (FRAME_HEADER_SIZE + 17 + 1)
    assert replay(buf, start).end == len(buf)
    damaged = bytearray(buf)
    damaged[remove_at + where] ^= 0x01
    state = replay(bytes(damaged), start)
    assert datas(state) == [b"a", b"b"]
    assert state.damage.kind == "corrupt" and state.end == remove_at
