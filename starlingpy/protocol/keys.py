"""Checking queue names and parsing ``get`` keys (``QUEUES[/OPTION]...``).

Pure functions over ``bytes``; every refusal is a :class:`ProtocolError`
carrying the reply the client gets.

The queue-name rule here is the only one: the client (on a name's UTF-8
bytes) and the supervisor's config use :func:`queue_name_problem` too. A
plain queue name is 1-250 bytes without whitespace or control characters
(ASCII 0x00-0x20, 0x7f) and without ``/ | + ~`` (options, alternatives and
reserved separators). Any other byte is allowed: ``é`` is a good name.
"""

from __future__ import annotations

from ..queue import MAX_DELAY_MS, MAX_UNIQUE_ID
from .commands import GetKey
from .errors import ProtocolError

MAX_KEY_LENGTH = 250
MAX_TIMEOUT_MS = 2**31 - 1

BAD_FORMAT = b"CLIENT_ERROR bad command line format"
BAD_QUEUE_NAME = b"CLIENT_ERROR bad queue name"

# Bytes no key may hold (whitespace and control characters) ...
_CONTROL = bytes(range(0x21)) + b"\x7f"
# ... and the ones a plain queue name may not hold on top: option, priority,
# fanout and reserved separators.
_RESERVED = b"/|+~"
NOT_PLAIN = _CONTROL + _RESERVED

_FLAG_OPTIONS = {b"open": "open", b"close": "close", b"abort": "abort", b"peek": "peek"}

def is_plain_queue_name(name: bytes) -> bool:
    """True when ``name`` is a valid plain queue name (the common, fast case)."""
    return 0 < len(name) <= MAX_KEY_LENGTH and len(name.translate(None, NOT_PLAIN)) == len(name)


_RESERVED_PROBLEM = "contains a reserved character (one of / | + ~)"


def queue_name_problem(name: bytes) -> str | None:
    """Why ``name`` is no valid plain queue name, in words, or None when it is."""
    if not name:
        return "is empty"
    if len(name) > MAX_KEY_LENGTH:
        return f"is over {MAX_KEY_LENGTH} bytes"
    if len(name.translate(None, _CONTROL)) != len(name):
        return "contains whitespace or a control character"
    if len(name.translate(None, _RESERVED)) != len(name):
        return _RESERVED_PROBLEM
    return None


def queue_name_error(name: bytes) -> bytes | None:
    """The reply refusing ``name`` as a plain queue name, or None when it is valid."""
    problem = queue_name_problem(name)
    if problem is None:
        return None
    return BAD_QUEUE_NAME if problem is _RESERVED_PROBLEM else BAD_FORMAT


def check_queue_name(name: bytes, *, noreply: bool = False) -> bytes:
    """Return ``name`` if it is a valid plain queue name, else raise ProtocolError
    (with no reply under ``noreply``)."""
    reply = queue_name_error(name)
    if reply is not None:
        raise ProtocolError(None if noreply else reply)
    return name


_UNIQUE_ID_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"


def parse_set_key(raw: bytes) -> tuple[bytes, int, bytes | None]:
    """``(queue, delay_ms, unique)`` of a ``set`` key ``QUEUE[/delay=<ms>][/unique=<id>]``
    (options in any order, each at most once); ProtocolError when malformed:
    ``bad command line format`` for a bad value or a repeated option, ``bad
    queue name`` for anything else after a ``/``."""
    queue, slash, option_part = raw.partition(b"/")
    if not slash or not is_plain_queue_name(queue) or len(raw) > MAX_KEY_LENGTH:
        raise ProtocolError(BAD_QUEUE_NAME)
    delay_ms: int | None = None
    unique: bytes | None = None
    for option in option_part.split(b"/"):
        if option.startswith(b"delay="):
            digits = option[6:]
            if delay_ms is not None or not (digits.isdigit() and digits.isascii() and len(digits) <= 12):
                raise ProtocolError(BAD_FORMAT)
            delay_ms = int(digits)
            if delay_ms > MAX_DELAY_MS:
                raise ProtocolError(BAD_FORMAT)
        elif option.startswith(b"unique="):
            if unique is not None:
                raise ProtocolError(BAD_FORMAT)
            unique = option[7:]
            if (not 0 < len(unique) <= MAX_UNIQUE_ID
                    or unique.translate(None, _UNIQUE_ID_BYTES)):
                raise ProtocolError(BAD_FORMAT)
        else:  # no option of set's: a "/" where a name may not have one
            raise ProtocolError(BAD_QUEUE_NAME)
    return queue, delay_ms or 0, unique


def parse_get_key(raw: bytes) -> GetKey:
    """Parse one ``get`` key; raise ProtocolError (``bad command line format``
    or ``bad queue name``) when it is malformed."""
    if is_plain_queue_name(raw):
        return GetKey(raw, (raw,))
    return _parse_compound_key(raw)


def _parse_compound_key(raw: bytes) -> GetKey:
    if not 0 < len(raw) <= MAX_KEY_LENGTH or len(raw.translate(None, _CONTROL)) != len(raw):
        raise ProtocolError(BAD_FORMAT)
    queue_part, slash, option_part = raw.partition(b"/")
    queues = tuple(queue_part.split(b"|"))
    for queue in queues:
        # "/" cannot be here (partition) and "|" was split on: an empty name
        # ("a||b", "/open") or "+" / "~" is what is left to refuse.
        if not queue or len(queue.translate(None, _RESERVED)) != len(queue):
            raise ProtocolError(BAD_QUEUE_NAME)
    options: dict[str, bool] = {}
    timeout_ms: int | None = None
    if slash:
        for option in option_part.split(b"/"):
            name = _FLAG_OPTIONS.get(option)
            if name is not None:
                if name in options:
                    raise ProtocolError(BAD_FORMAT)
                options[name] = True
            elif option.startswith(b"t="):
                digits = option[2:]
                if timeout_ms is not None or not (digits.isdigit() and len(digits) <= 10):
                    raise ProtocolError(BAD_FORMAT)
                timeout_ms = int(digits)
                if timeout_ms > MAX_TIMEOUT_MS:
                    raise ProtocolError(BAD_FORMAT)
            else:
                raise ProtocolError(BAD_FORMAT)
    if "peek" in options and len(options) > 1:
        raise ProtocolError(BAD_FORMAT)  # peek with open/close/abort
    if "abort" in options and ("open" in options or "close" in options):
        raise ProtocolError(BAD_FORMAT)
    return GetKey(raw, queues, timeout_ms, **options)
