"""Queue sizes for ``status``, read from the server's ``stats``."""

from __future__ import annotations

from starlingpy.client.errors import ServerError
from starlingpy.client.queue_stats import queue_items, read_stats


def queue_sizes(address: str) -> dict[str, int] | None:
    """Items per queue at ``address``, or None if the server does not answer."""
    try:
        return queue_items(read_stats(address, timeout=3.0))
    except (OSError, ValueError, ServerError):
        return None
