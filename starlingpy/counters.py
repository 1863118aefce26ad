"""Server-wide counters and the `stats` snapshot built from them."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlingpy import __version__


@dataclass
class ServerCounters:
    """Mutable counters, touched only from the trio thread."""

    started: float = field(default_factory=time.time)
    curr_connections: int = 0
    total_connections: int = 0
    rejected_connections: int = 0
    cmd_get: int = 0
    cmd_set: int = 0
    get_hits: int = 0
    get_misses: int = 0
    bytes_read: int = 0
    bytes_written: int = 0


def server_stats_pairs(counters: ServerCounters, queue_stats: dict,
                       limit_maxbytes: int) -> list[tuple[str, object]]:
    """Starling's server-wide set, from one snapshot of every queue.

    ``queue_stats`` maps queue name (bytes) to QueueStatistics, taken in one
    go by the store so the numbers agree with each other.
    """
    now = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    values = queue_stats.values()
    return [
        ("pid", os.getpid()),
        ("uptime", int(now - counters.started)),
        ("time", int(now)),
        ("version", __version__),
        ("rusage_user", f"{usage.ru_utime:.6f}"),
        ("rusage_system", f"{usage.ru_stime:.6f}"),
        ("curr_items", sum(s.items for s in values)),
        ("total_items", sum(s.total_items for s in values)),
        ("bytes", sum(s.bytes for s in values)),
        ("curr_connections", counters.curr_connections),
        ("total_connections", counters.total_connections),
        ("rejected_connections", counters.rejected_connections),
        ("cmd_get", counters.cmd_get),
        ("cmd_set", counters.cmd_set),
        ("get_hits", counters.get_hits),
        ("get_misses", counters.get_misses),
        ("bytes_read", counters.bytes_read),
        ("bytes_written", counters.bytes_written),
        ("limit_maxbytes", limit_maxbytes),
    ]


_QUEUE_LINES = b"".join(b"STAT queue_%%s_%s %%d\r\n" % field for field in (
    b"items", b"total_items", b"logsize", b"expired_items", b"age", b"bytes",
    b"open_transactions", b"waiters", b"delayed_items"))


def queue_stats_lines(queue_stats: Iterable[tuple[bytes, object]]) -> bytes:
    """Each queue's ``STAT queue_<name>_*`` lines, in the order given: one
    bytes format per queue (stats of many queues must not stall the loop)."""
    lines = _QUEUE_LINES
    parts = []
    for name, s in queue_stats:
        label = name if name.isascii() else _label(name)
        parts.append(lines % (label, s.items, label, s.total_items, label, s.logsize,
                              label, s.expired_items, label, s.age_ms, label, s.bytes,
                              label, s.open_transactions, label, s.waiters,
                              label, s.delayed_items))
    return b"".join(parts)


def _label(name: bytes) -> bytes:
    # Not UTF-8: shown with backslash escapes rather than as raw bytes.
    return name.decode("utf-8", "backslashreplace").encode("utf-8")
