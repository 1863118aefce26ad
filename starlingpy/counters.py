"""Server-wide counters and the `stats` snapshot built from them."""

from __future__ import annotations

import os
import resource
import time
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


def stats_pairs(counters: ServerCounters, queue_stats: dict, limit_maxbytes: int) -> list[tuple[str, object]]:
    """Starling's server-wide set, then each queue's lines, from one snapshot.

    ``queue_stats`` maps queue name (bytes) to QueueStatistics, taken in one
    go by the collection so the numbers agree with each other.
    """
    now = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    curr_items = sum(s.items for s in queue_stats.values())
    total_items = sum(s.total_items for s in queue_stats.values())
    total_bytes = sum(s.bytes for s in queue_stats.values())
    pairs: list[tuple[str, object]] = [
        ("pid", os.getpid()),
        ("uptime", int(now - counters.started)),
        ("time", int(now)),
        ("version", __version__),
        ("rusage_user", f"{usage.ru_utime:.6f}"),
        ("rusage_system", f"{usage.ru_stime:.6f}"),
        ("curr_items", curr_items),
        ("total_items", total_items),
        ("bytes", total_bytes),
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
    for name in sorted(queue_stats):
        s = queue_stats[name]
        label = "queue_" + name.decode("utf-8", "backslashreplace")
        pairs += [
            (f"{label}_items", s.items),
            (f"{label}_total_items", s.total_items),
            (f"{label}_logsize", s.logsize),
            (f"{label}_expired_items", s.expired_items),
            (f"{label}_age", s.age_ms),
            (f"{label}_bytes", s.bytes),
            (f"{label}_open_transactions", s.open_transactions),
            (f"{label}_waiters", s.waiters),
        ]
    return pairs
