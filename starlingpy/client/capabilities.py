"""What a server supports, read once per connection from ``version``.

starlingpy answers ``VERSION starlingpy 0.1.0`` and has every extension of
docs/protocol.md. Anything else (Ruby Starling's ``VERSION 0.10.1``, memcached,
an unknown queue) is taken as plain memcache: set, get, delete, stats. We
do not probe by sending extension keys, because on a plain server
``get q/t=100`` is a get of a queue literally named ``q/t=100``: it would
"work" and silently do something else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    """The extensions a server speaks, as the client uses them."""

    version: str
    blocking_get: bool = False      # /t=<ms>
    reliable_read: bool = False     # /open, /close, /abort
    priority: bool = False          # a|b alternatives
    peek: bool = False              # /peek
    flush: bool = False             # flush <queue>
    held_items: bool = False        # set <queue>/delay=<ms>/unique=<id>

    @property
    def extended(self) -> bool:
        return self.blocking_get and self.reliable_read and self.priority and self.peek


def detect(version: str) -> Capabilities:
    """Capabilities from the text after ``VERSION`` in the server's reply."""
    if version.split(" ", 1)[0].lower() == "starlingpy":
        return Capabilities(version, blocking_get=True, reliable_read=True,
                            priority=True, peek=True, flush=True, held_items=True)
    return Capabilities(version)
