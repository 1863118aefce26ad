"""Queue sizes for ``status``, read from the server's ``stats``."""

from __future__ import annotations

from starlingpy.client.errors import ServerError
from starlingpy.client.queue_stats import queue_items, read_stats
from starlingpy.client.security import Credentials


def queue_sizes(address: str) -> dict[str, int] | None:
    """Items per queue at ``address``, or None if the server does not answer."""
    try:
        return queue_items(read_stats(address, 3.0, Credentials.from_environment()))
    except (OSError, ValueError, ServerError):
        return None
