"""Reader for Ruby Starling's (0.10.x) queue journals (sans-IO).

Starling kept one file per queue, named after the raw queue name, holding
two kinds of record, little-endian:

* add: ``0x00``, ``size:u32``, then ``size`` bytes: ``expiry:u32`` (absolute
  unix time, 0 = never) followed by the item's data (so ``size >= 4``);
* remove: ``0x01`` alone, which drops the head item.

A record cut short at the end of the file (Starling died mid-write) is
ignored. Anything else means the file is not a Starling journal.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

_ADD, _REMOVE = 0, 1
_U32 = struct.Struct("<I")


@dataclass
class LegacyJournal:
    """The items a Starling journal holds, head first, as ``(expiry, data)``;
    ``cut`` is how many bytes of a cut-short last record were ignored."""
    items: list[tuple[int, bytes]]
    cut: int = 0


def parse_legacy(buf: bytes) -> LegacyJournal | None:
    """Replay a Starling journal; ``None`` if ``buf`` is not one."""
    items: deque[tuple[int, bytes]] = deque()
    pos, size = 0, len(buf)
    while pos < size:
        op = buf[pos]
        if op == _ADD:
            if pos + 5 > size:
                break
            (length,) = _U32.unpack_from(buf, pos + 1)
            if length < 4:  # no room for the expiry: not Starling's, even cut short
                return None
            end = pos + 5 + length
            if end > size:
                break
            (expiry,) = _U32.unpack_from(buf, pos + 5)
            items.append((expiry, bytes(buf[pos + 9:end])))
            pos = end
        elif op == _REMOVE:
            if items:
                items.popleft()
            pos += 1
        else:
            return None
    return LegacyJournal(list(items), size - pos)
