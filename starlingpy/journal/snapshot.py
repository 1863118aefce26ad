"""A queue's contents as journal frames: what a rewrite writes (sans-IO).

A snapshot is the open items (added, then opened again under their
transaction ids, so they survive as open) followed by the waiting items.
Blocks are encoded column by column, without a Python object per item; the
one frame encoder is :func:`~starlingpy.journal.codec.encode_frame`.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, islice
from operator import le

from ..blocks import Entry, ItemRun
from .codec import MAX_FRAME_DATA, RecordBuffer, encode_frame, little_endian

SNAPSHOT_FRAME_ITEMS = 4096
ADDED_SPREAD = 1.0  # seconds of enqueue times one snapshot frame may merge


def encode_state(opened: list, entries: list, held: list = ()) -> list[bytes]:
    """Frames that rebuild a queue's snapshot (see
    :meth:`starlingpy.queue.Queue.snapshot`): held items keep their numbers,
    open ones their transaction ids."""
    chunks: list[bytes] = []
    if opened or held:
        batch = RecordBuffer()
        for _, item in opened:
            batch.add(item.data, item.flags, item.expiry, item.added)
        for xid, _ in opened:
            batch.open(xid)
        for seq, item, _ in held:
            batch.add_held(seq, item)
        for seq, _, xid in held:
            if xid:
                batch.open_held(xid, seq)
        chunks += batch.encode()
    loose: list[Entry] = []
    for entry in entries:
        if entry.__class__ is ItemRun:
            chunks += _encode_items(loose)
            loose = []
            chunks += _encode_run(entry)
        else:
            loose.append(entry)
    chunks += _encode_items(loose)
    return chunks


def _encode_items(items: list[Entry]) -> list[bytes]:
    """Item tuples as ADD frames of up to ``SNAPSHOT_FRAME_ITEMS`` items and
    ``MAX_FRAME_DATA`` bytes (or one larger item), column by column; a frame
    is split where enqueue times spread too far."""
    chunks: list[bytes] = []
    start = 0
    while start < len(items):
        data, flags, expiries, added = zip(*items[start:start + SNAPSHOT_FRAME_ITEMS])
        cut = len(data)
        if max(added) - min(added) > ADDED_SPREAD:
            cut = next(i for i, t in enumerate(added) if abs(t - added[0]) > ADDED_SPREAD)
        lengths = array("I", map(len, data[:cut]))
        size = sum(lengths)
        if size > MAX_FRAME_DATA:
            cut = max(1, bisect_right(list(accumulate(lengths)), MAX_FRAME_DATA))
            lengths = lengths[:cut]
            size = sum(lengths)
        chunks += encode_frame(cut, bytes(cut), little_endian(array("I", flags[:cut])),
                               little_endian(lengths), little_endian(array("d", expiries[:cut])),
                               list(data[:cut]), size, added[0])
        start += cut
    return chunks


def frame_cuts(starts: Sequence[int], steps: Sequence[float]) -> tuple[list[int], list[float]]:
    """Where a block's items are cut into frames (``starts[k]`` onwards were
    added at ``steps[k]``): a new frame wherever the enqueue time moves more
    than ``ADDED_SPREAD`` from the frame's own. Returns the first item of
    each frame and its time."""
    cuts, times = [0], [steps[0]]
    if all(map(le, steps, islice(steps, 1, None))):  # in order (the usual case): bisect
        k = 0
        while (k := bisect_right(steps, steps[k] + ADDED_SPREAD, k)) < len(steps):
            cuts.append(starts[k])
            times.append(steps[k])
        return cuts, times
    for k in range(1, len(steps)):  # the clock went back at some point
        if abs(steps[k] - times[-1]) > ADDED_SPREAD:
            cuts.append(starts[k])
            times.append(steps[k])
    return cuts, times


def _encode_run(run: ItemRun) -> list[bytes]:
    """A block as frames, without a Python object per item: one frame per
    stretch of items whose enqueue times are close."""
    count = len(run.lengths)
    cuts, times = frame_cuts(*run.time_steps())
    cuts.append(count)
    flags = run.flags if run.flags is not None else array("I", bytes(4 * count))
    expiries = run.expiries if run.expiries is not None else array("d", bytes(8 * count))
    chunks: list[bytes] = []
    at = 0
    for a, b, added in zip(cuts, cuts[1:], times):
        lengths = run.lengths[a:b]
        size = sum(lengths)
        chunks += encode_frame(b - a, bytes(b - a), little_endian(flags[a:b]),
                               little_endian(lengths), little_endian(expiries[a:b]),
                               [run.data[at:at + size]], size, added)
        at += size
    return chunks
