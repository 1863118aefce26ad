"""Reading per-queue numbers out of ``stats`` replies.

Per-queue lines are ``queue_<name>_<field>``, and a queue name may itself
contain ``_``, so the name is found by stripping a known field suffix. A
candidate name counts as a queue only if every field that Ruby Starling
and starlingpy both report is there for it, which settles the ambiguous
splits (``queue_a_total_items`` is queue ``a``'s ``total_items`` when
``queue_a_items`` exists, not queue ``a_total``'s ``items``).
"""

from __future__ import annotations

from typing import Iterable, Mapping

# Longest first, so "total_items" is tried before "items".
_FIELDS = ("open_transactions", "expired_items", "total_items", "logsize", "waiters", "items",
           "bytes", "age")
_COMMON = ("items", "total_items", "logsize", "expired_items")


def queue_names(stats: Mapping[str, str]) -> set[str]:
    """The queues a server's ``stats`` reports."""
    candidates = set()
    for key in stats:
        if not key.startswith("queue_"):
            continue
        for field in _FIELDS:
            if key.endswith("_" + field) and len(key) > len("queue_") + len(field) + 1:
                candidates.add(key[len("queue_"):-len(field) - 1])
    return {name for name in candidates
            if all(f"queue_{name}_{field}" in stats for field in _COMMON)}


def queue_sizes(all_stats: Iterable[Mapping[str, str]]) -> dict[str, int]:
    """``{queue: items waiting}`` summed over the servers' ``stats``."""
    sizes: dict[str, int] = {}
    for stats in all_stats:
        for name in queue_names(stats):
            try:
                items = int(stats[f"queue_{name}_items"])
            except ValueError:
                continue  # a malformed number is not a count
            sizes[name] = sizes.get(name, 0) + items
    return sizes
