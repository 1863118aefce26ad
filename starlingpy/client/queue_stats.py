"""The ``stats`` command: one reader for its reply, and one parser for the
per-queue numbers in it. Used by the client, by ``starlingpy stats`` and by
the supervisor's ``status``.

The reply is read here rather than with pymemcache: its ``stats()`` keeps
only the first word of a value (``version starlingpy 0.1.0``), and its
``raw_command`` loses all but the last 4 KiB of a long reply.

Per-queue lines are ``queue_<name>_<field>``, and a queue name may itself
contain ``_``, so the name is found by stripping a known field suffix. A
candidate name counts as a queue only if the fields that Ruby Starling and
starlingpy report for every queue (``items`` and ``logsize``) are both there
for it, which settles the ambiguous splits (``queue_a_total_items`` is queue
``a``'s ``total_items`` when ``queue_a_logsize`` exists, not queue
``a_total``'s ``items``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping

from .errors import ServerError

MAX_STATS_REPLY = 64 * 1024 * 1024  # bounds memory if a server never says END

# Longest first, so "total_items" is tried before "items".
_FIELDS = ("open_transactions", "delayed_items", "expired_items", "total_items", "logsize", "waiters",
           "items",
           "bytes", "age")
_EVERY_QUEUE_HAS = ("items", "logsize")


def request_stats(sock: socket.socket) -> dict[str, str]:
    """Send ``stats`` on a connected socket and read the whole reply:
    ``{name: value}``, both text, values verbatim.

    Raises :class:`ServerError` for an error reply, ``ConnectionError`` if
    the server closes the connection or never ends its reply. On an
    exception the stream is out of step: close the socket.
    """
    sock.sendall(b"stats\r\n")
    reply = bytearray()
    while not (reply.endswith(b"\r\nEND\r\n") or reply == b"END\r\n"):
        if reply.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")) and reply.endswith(b"\r\n"):
            raise ServerError(bytes(reply).decode("utf-8", "replace").strip())
        if len(reply) > MAX_STATS_REPLY:
            raise ConnectionError("stats reply too long")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection during stats")
        reply += chunk
    return parse_stats(bytes(reply))


def parse_stats(reply: bytes) -> dict[str, str]:
    """``STAT name value`` lines to ``{name: value}`` (a value may hold spaces)."""
    stats: dict[str, str] = {}
    for line in reply.decode("utf-8", "replace").split("\r\n"):
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0] == "STAT":
            stats[parts[1]] = parts[2] if len(parts) == 3 else ""
    return stats


def read_stats(address: str, timeout: float = 5.0, credentials=None) -> dict[str, str]:
    """One ``stats`` round trip to ``host:port`` for tools that need no
    client (``starlingpy stats``, ``status``); TLS and login as
    ``credentials`` (a :class:`~starlingpy.client.security.Credentials`)
    say. Raises OSError (ConnectionError included), ServerError or ValueError."""
    from .security import connect  # here: security -> errors, servers -> connection -> this module
    from .servers import parse_address

    with connect(parse_address(address), timeout, credentials) as sock:
        return request_stats(sock)


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
            if all(f"queue_{name}_{field}" in stats for field in _EVERY_QUEUE_HAS)}


def queue_items(stats: Mapping[str, str]) -> dict[str, int]:
    """``{queue: items waiting}`` from one server's ``stats``; a queue whose
    count is not a number is left out."""
    items = {}
    for name in queue_names(stats):
        value = stats[f"queue_{name}_items"]
        if value.isdigit():
            items[name] = int(value)
    return items


def queue_sizes(all_stats: Iterable[Mapping[str, str]]) -> dict[str, int]:
    """``{queue: items waiting}`` summed over the servers' ``stats``."""
    sizes: dict[str, int] = {}
    for stats in all_stats:
        for name, items in queue_items(stats).items():
            sizes[name] = sizes.get(name, 0) + items
    return sizes
