"""Queue names and the get-key syntax of docs/protocol.md (``a|b/t=500/open``).

pymemcache's own key check (``check_key``) only refuses whitespace, NUL and
keys over 250 bytes, and with ``allow_unicode_keys=False`` it refuses
non-ASCII ``str`` keys. It lets ``/`` and ``|`` through, which we need for
options and priority alternatives, but it would also let through names that
*contain* them, which the server would read as options. So the client
validates queue names itself, builds the key, encodes it to UTF-8 bytes and
hands pymemcache bytes: its check then only re-confirms what we checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import timedelta

from starlingpy.protocol.keys import MAX_KEY_LENGTH as MAX_KEY_BYTES
from starlingpy.protocol.keys import queue_name_problem
from starlingpy.queue import MAX_DELAY_MS, MAX_UNIQUE_ID

from .errors import InvalidQueueName

_UNIQUE_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_UNIQUE_ID}}}", re.ASCII)


def check_queue_name(name: str) -> str:
    """Return ``name`` if the protocol can carry it as one plain queue name
    (the server's own rule, on the name's UTF-8 bytes)."""
    if not isinstance(name, str):
        raise InvalidQueueName(f"queue name must be str, got {type(name).__name__}")
    try:
        problem = queue_name_problem(name.encode("utf-8"))
    except UnicodeEncodeError:
        problem = "is not valid Unicode (a lone surrogate)"
    if problem is not None:
        raise InvalidQueueName(f"queue name {name!r} {problem}")
    return name


def queue_list(queues: str | Sequence[str]) -> list[str]:
    """Normalise ``"a"`` or ``["a", "b"]`` to a validated, non-empty list."""
    names = [queues] if isinstance(queues, str) else list(queues)
    if not names:
        raise InvalidQueueName("no queue given")
    return [check_queue_name(name) for name in names]


def build_set_key(queue: str, *, delay: float = 0, unique: str | None = None) -> bytes:
    """The wire key for a set with options: ``queue/delay=<ms>/unique=<id>``
    (``delay`` in seconds, rounded up to whole ms so an item is never early)."""
    key = check_queue_name(queue)
    if delay:
        key += f"/delay={math.ceil(delay * 1000)}"
    if unique is not None:
        key += f"/unique={unique}"
    return key.encode("utf-8")


def check_set_options(delay: float | timedelta | None, unique: str | None) -> float:
    """``delay`` in seconds, checked; ``unique`` checked (1-200 characters of
    ``[A-Za-z0-9_.:-]``). ValueError/TypeError for what the server would refuse."""
    if isinstance(delay, timedelta):
        delay = delay.total_seconds()
    if delay is None:
        delay = 0.0
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"delay must be seconds (a number or a timedelta), got {delay!r}")
    if not 0 <= delay <= MAX_DELAY_MS / 1000:
        raise ValueError(f"delay must be 0 to {MAX_DELAY_MS // 1000} seconds, got {delay!r}")
    if unique is not None and (not isinstance(unique, str) or not _UNIQUE_ID.fullmatch(unique)):
        raise ValueError(f"unique id must be 1-200 characters of [A-Za-z0-9_.:-], got {unique!r}")
    return float(delay)


def build_key(queues: Sequence[str], *, wait: float | None = None, open_: bool = False,
              close: bool = False, abort: bool = False, peek: bool = False) -> bytes:
    """The wire key for a get: alternatives joined by ``|``, then options.

    ``wait`` is in seconds and becomes ``/t=<ms>`` (at least 1 ms: ``/t=0``
    would be no wait at all).
    """
    key = "|".join(queues)
    if wait is not None and wait > 0:
        key += f"/t={max(1, int(wait * 1000))}"
    if close:
        key += "/close"
    if open_:
        key += "/open"
    if abort:
        key += "/abort"
    if peek:
        key += "/peek"
    raw = key.encode("utf-8")
    if len(raw) > MAX_KEY_BYTES:
        raise InvalidQueueName(f"key {key!r} is over {MAX_KEY_BYTES} bytes")
    return raw
