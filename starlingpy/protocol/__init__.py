"""The memcache text protocol, sans IO: bytes in, commands out, reply bytes out.

No trio, no sockets, no os here. ``Parser`` turns received bytes into the
commands of :mod:`.commands`; :mod:`.replies` formats what goes back; a
refusal is a :class:`ProtocolError` carrying its reply. Any other exception
from this package is a bug.
"""

from . import replies
from .commands import (
    Command,
    Delete,
    Flush,
    FlushAll,
    Get,
    GetKey,
    Quit,
    Set,
    Shutdown,
    Stats,
    Verbosity,
    Version,
)
from .errors import ProtocolError
from .parser import Parser

__all__ = [
    "Command",
    "Delete",
    "Flush",
    "FlushAll",
    "Get",
    "GetKey",
    "Parser",
    "ProtocolError",
    "Quit",
    "Set",
    "Shutdown",
    "Stats",
    "Verbosity",
    "Version",
    "replies",
]
