"""The failure queue: list, retry and drop failed messages.

A queue has no "list" command, only take. So we take items with reliable
reads (``/open``), each on its own connection, and hold them open while we
look: nothing is removed until we confirm it, and if this process dies every
held item goes back to the queue. Items we keep are aborted in reverse
order, which puts them back at the head in their original order.

At most ``limit`` items are looked at per call (one open connection each).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable

from starlingpy.worker.tasks import BadMessage, FailureRecord

__all__ = ["FailedItem", "list_failed", "retry_failed", "drop_failed"]

log = logging.getLogger(__name__)


class _PutBack(Exception):
    """Thrown into a held reliable read to abort it."""


@dataclasses.dataclass(frozen=True)
class FailedItem:
    """One item of the failure queue: a record, or bytes that are not one."""

    record: FailureRecord | None
    raw: bytes

    @property
    def id(self) -> str:
        """The record's id; for bytes that are no record, a digest of them."""
        return self.record.id if self.record else "raw-" + hashlib.sha256(self.raw).hexdigest()[:28]


def list_failed(client, queue: str = "failed", limit: int = 100) -> list[FailedItem]:
    """The first ``limit`` items of the failure queue, left in place."""
    seen, _ = _visit(client, queue, limit, lambda item: False)
    return seen


def retry_failed(client, queue: str = "failed", ids: Iterable[str] | None = None,
                 limit: int = 100) -> list[FailedItem]:
    """Push each selected failed message (all when ``ids`` is None) back to
    the queue it came from as a fresh first attempt, then remove it from the
    failure queue. Returns what was retried."""
    wanted = set(ids) if ids is not None else None

    def act(item: FailedItem) -> bool:
        if wanted is not None and item.id not in wanted:
            return False
        record = item.record
        if record is None:
            return False  # not a failure record: nowhere to send it
        if record.message is not None:
            fresh = dataclasses.replace(record.message.next_attempt(), attempt=1)
            client.set(record.queue, fresh.to_dict())
        else:
            client.set(record.queue, record.raw)  # undecodable: its bytes, as they were
        return True

    return _visit(client, queue, limit, act)[1]


def drop_failed(client, queue: str = "failed", ids: Iterable[str] | None = None,
                limit: int = 100) -> list[FailedItem]:
    """Remove the selected items (all when ``ids`` is None) for good."""
    wanted = set(ids) if ids is not None else None
    return _visit(client, queue, limit, lambda item: wanted is None or item.id in wanted)[1]


def _visit(client, queue: str, limit: int,
           act: Callable[[FailedItem], bool]) -> tuple[list[FailedItem], list[FailedItem]]:
    """Open up to ``limit`` items; ``act`` returns True to remove an item
    (confirm), False to keep it. Returns (every item seen, items removed)."""
    held = []      # (reading, item) kept open, to abort at the end
    seen, removed = [], []
    try:
        for _ in range(limit):
            reading = client.reliable(queue, timeout=None)
            message = reading.__enter__()
            if message is None:
                reading.__exit__(None, None, None)
                break
            item = _item(message.raw)
            seen.append(item)
            try:
                remove = act(item)
            except BaseException as exc:
                reading.__exit__(type(exc), exc, exc.__traceback__)
                raise
            if remove:
                reading.__exit__(None, None, None)  # confirm: gone for good
                removed.append(item)
            else:
                held.append(reading)
    finally:
        for reading in reversed(held):
            reading.__exit__(_PutBack, _PutBack(), None)
    return seen, removed


def _item(raw: bytes) -> FailedItem:
    try:
        return FailedItem(FailureRecord.decode(raw), raw)
    except (BadMessage, KeyError, TypeError, ValueError):
        return FailedItem(None, raw)
