"""Compact blocks of queued items: how a long queue is held in memory.

A block (:class:`ItemRun`) is a run of consecutive items kept as one joined
bytes object plus a few array columns, a handful of bytes per item over its
data. Queues seal items put at run time into blocks, and replay recovers
items as blocks directly, so a million waiting items are not a million
Python objects. Pure data: no I/O, no knowledge of the journal format.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, chain, repeat
from operator import sub

RUN_ITEMS = 4096  # items per block at most
RUN_BYTES = 1 << 20  # data bytes per block at most (or one larger item)

Entry = tuple  # (data, flags, expiry, added): one waiting item outside a block


class ItemRun:
    """Items held as columns until they reach the front of their queue,
    oldest first. Never changed once made.

    ``data`` is the items' data back to back; ``lengths``, ``flags`` and
    ``expiries`` are their columns (``flags``/``expiries`` are ``None`` when
    all zero). Enqueue times are per stretch: item ``i`` was added at
    ``times[bisect_right(starts, i) - 1]``; or, when ``starts`` is ``None``,
    per item: ``times[i]``.
    """

    __slots__ = ("data", "expiries", "flags", "lengths", "starts", "times")

    def __init__(self, data: bytes, lengths: array, flags: array | None,
                 expiries: array | None, starts: array | None, times: array) -> None:
        self.data = data
        self.lengths = lengths
        self.flags = flags
        self.expiries = expiries
        self.starts = starts
        self.times = times

    def __len__(self) -> int:
        return len(self.lengths)

    def time_steps(self) -> tuple[Sequence[int], Sequence[float]]:
        """``(starts, times)``: item ``starts[k]`` and those after it up to
        ``starts[k + 1]`` were added at ``times[k]``."""
        if self.starts is None:
            return range(len(self.times)), self.times
        return self.starts, self.times


def seal(entries: Iterable[Entry]) -> list[ItemRun]:
    """Item tuples as blocks of ``RUN_BYTES`` at most (or of one item, if
    larger), so memory comes back block by block as the queue drains."""
    data, flags, expiries, added = zip(*entries)
    lengths = array("I", map(len, data))
    ends = list(accumulate(lengths))
    runs: list[ItemRun] = []
    start = 0
    while start < len(data):
        limit = (ends[start - 1] if start else 0) + RUN_BYTES
        stop = max(start + 1, bisect_right(ends, limit, start))
        part_flags, part_expiries = flags[start:stop], expiries[start:stop]
        runs.append(ItemRun(b"".join(data[start:stop]), lengths[start:stop],
                            array("I", part_flags) if any(part_flags) else None,
                            array("d", part_expiries) if any(part_expiries) else None,
                            None, array("d", added[start:stop])))
        start = stop
    return runs


def thaw(run: ItemRun) -> Iterator[Entry]:
    """A block's items as tuples, built at C speed (no Python loop per item)."""
    offsets = list(accumulate(run.lengths, initial=0))
    data = map(run.data.__getitem__, map(slice, offsets, offsets[1:]))
    flags = run.flags if run.flags is not None else repeat(0)
    expiries = run.expiries if run.expiries is not None else repeat(0.0)
    starts, times = run.time_steps()
    if run.starts is not None:  # one time per stretch: repeat it for the stretch's items
        counts = map(sub, [*starts[1:], len(run.lengths)], starts)
        times = chain.from_iterable(map(repeat, times, counts))
    return zip(data, flags, expiries, times)
