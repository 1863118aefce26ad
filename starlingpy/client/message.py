"""The item a get hands back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """One dequeued (or peeked, or opened) item.

    ``value`` is decoded by the client's serializer from ``raw`` according
    to ``flags``; an encoding the serializer does not know leaves ``value``
    equal to ``raw``.
    """

    queue: str   # the queue it came from (matters for priority gets)
    value: object
    flags: int
    server: str  # "host:port" it came from
    raw: bytes
