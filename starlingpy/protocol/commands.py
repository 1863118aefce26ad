"""Typed commands produced by the parser (frozen, no I/O).

Queue names and keys are ``bytes`` exactly as they came off the wire; the
parser has already checked them (length, no whitespace or control bytes,
reserved characters) so the dispatcher never re-validates them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GetKey:
    """One key of a ``get``: ``QUEUES[/OPTION]...``.

    ``raw`` is the key as sent (echoed in the ``VALUE`` line); ``queues`` the
    priority alternatives in order (one or more plain queue names).
    """

    raw: bytes
    queues: tuple[bytes, ...]
    timeout_ms: int | None = None
    open: bool = False
    close: bool = False
    abort: bool = False
    peek: bool = False


@dataclass(frozen=True, slots=True)
class Set:
    queue: bytes
    flags: int
    exptime: int  # as sent: 0 never, <= 30 days relative, larger absolute, < 0 expired
    data: bytes
    noreply: bool = False
    delay_ms: int = 0  # ``<queue>/delay=<ms>``
    unique: bytes | None = None  # ``<queue>/unique=<id>``


@dataclass(frozen=True, slots=True)
class Get:
    keys: tuple[GetKey, ...]
    cas: bool = False  # sent as ``gets``: VALUE lines carry a cas field of 0


@dataclass(frozen=True, slots=True)
class Delete:
    queue: bytes
    noreply: bool = False


@dataclass(frozen=True, slots=True)
class Flush:
    queue: bytes


@dataclass(frozen=True, slots=True)
class FlushAll:
    delay: int = 0
    noreply: bool = False


@dataclass(frozen=True, slots=True)
class Stats:
    argument: bytes | None = None


@dataclass(frozen=True, slots=True)
class Version:
    pass


@dataclass(frozen=True, slots=True)
class Verbosity:
    level: int
    noreply: bool = False


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


Command = Set | Get | Delete | Flush | FlushAll | Stats | Version | Verbosity | Quit | Shutdown
