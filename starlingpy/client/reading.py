"""Taking items: sweeps in strict priority order, waits, reliable reads.

How a take runs (``Reader.take``):

1. *Sweep*: for each queue in priority order, ask every live server
   (rotating start) for one item with a plain single-queue key
   (``get q`` or ``get q/open``). The first item found wins, so an item in
   an earlier queue on any server beats one in a later queue. Single-queue
   keys also tell us which queue an item came from: the ``VALUE`` line of a
   compound ``a|b`` key only echoes ``a|b``.
2. *Wait* (only with a timeout): ask one server to wait server-side. For one
   queue that is the take itself, ``get q/t=<ms>[/open]``. For several it is
   ``get a|b/t=<ms>/peek``, which only reports that something arrived; the
   next sweep then takes it in priority order. With several servers each
   wait is a slice of at most ``multi_server_slice`` seconds on the next
   server in rotation, so an item on another server waits at most one slice.
   A server without ``/t=`` (Ruby Starling) is polled instead, with a sleep
   that doubles from ``poll_min`` to ``poll_max`` while everything is empty,
   the way Starling's own client polled.

Why a get is never retried after its request was sent: the server may have
dequeued the item (and journaled that) before the connection broke, so the
item is gone from the queue whether or not we saw it. Sending the same get
again, to the same or another server, would take a *second* item and hide
that the first was lost. So a failed get only marks its server dead; the
sweep goes on with the other servers, never re-sending to the failed one in
the same call, and the loss is logged. Reliable reads (``/open``) do not
have this hole: an opened item whose connection breaks goes back to the head
of its queue on the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from starlingpy.backoff import Backoff

from .capabilities import Capabilities
from .connection import Connection, ConnectionFailed
from .errors import ClientError, ConfirmFailed, ServerUnavailable, UnsupportedFeature
from .keys import build_key
from .servers import Server, ServerPool

log = logging.getLogger(__name__)


@dataclass
class Taken:
    """An item as it came off the wire; ``connection`` is held for /open items."""

    server: Server
    queue: str
    data: bytes
    flags: int
    connection: Connection | None = None


_FAILED = object()  # the server failed during this attempt (now marked dead)

# How a wait step ended without an item.
_WAITED = "waited"  # a server-side /t= wait ran out
_WOKEN = "woken"    # a /peek wait saw an item: sweep again at once
_POLL = "poll"      # no server-side wait possible: sleep, then sweep


class Reader:
    """The read side of :class:`~starlingpy.client.Client`."""

    def __init__(self, pool: ServerPool, *, poll_min: float = 0.01, poll_max: float = 0.25,
                 multi_server_slice: float = 0.5) -> None:
        self.pool = pool
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.multi_server_slice = multi_server_slice

    # -- public ----------------------------------------------------------

    def take(self, queues: Sequence[str], timeout: float | None, *,
             reliable: bool) -> Taken | None:
        """The first item of ``queues`` (priority order) or None.

        ``timeout`` None or 0: one sweep, no wait. Raises ServerUnavailable
        when no server could be asked at all, UnsupportedFeature for a
        reliable read on a server without ``/open``.
        """
        deadline = time.monotonic() + timeout if timeout else None
        poll = Backoff(self.poll_min, self.poll_max)
        woken_before = False
        if reliable:
            self._require_everywhere(queues)
        while True:
            servers = self.pool.live()
            if not servers:
                raise ServerUnavailable("no live server (all in back-off after failures)")
            taken, answered = self._sweep(servers, queues, reliable)
            if taken is not None:
                return taken
            if not answered:
                raise ServerUnavailable("every server failed")
            remaining = deadline - time.monotonic() if deadline is not None else 0.0
            if remaining <= 0:
                return None
            taken, outcome = self._wait(queues, remaining, reliable)
            if taken is not None:
                return taken
            if outcome == _WAITED or (outcome == _WOKEN and not woken_before):
                poll.reset()
            else:
                # Polling fallback (no /t= on the server), or a second wake-up
                # in a row whose item another consumer took first: back off.
                time.sleep(max(0.0, min(poll.next_delay(), deadline - time.monotonic())))
            woken_before = outcome == _WOKEN

    def peek(self, queue: str) -> Taken | None:
        """The head item of ``queue`` on the first server that has one."""
        answered = False
        for server in self.pool.live():
            result = self._attempt(server, [queue], peek=True)
            if result is _FAILED:
                continue
            answered = True
            if result is not None:
                return result
        if not answered:
            raise ServerUnavailable("no server could be asked")
        return None

    def confirm(self, taken: Taken) -> None:
        """``/close`` an opened item: it is gone for good. Raises ConfirmFailed
        when the server could not be told (it will deliver the item again)."""
        self._finish(taken, build_key([taken.queue], close=True), confirming=True)

    def abort(self, taken: Taken) -> None:
        """``/abort`` an opened item: back at the head of its queue. Never
        raises: if the request fails, closing the connection aborts it too."""
        self._finish(taken, build_key([taken.queue], abort=True), confirming=False)

    # -- steps -----------------------------------------------------------

    def _sweep(self, servers: list[Server], queues: Sequence[str],
               reliable: bool) -> tuple[Taken | None, bool]:
        answered = False
        failed: set[int] = set()
        for queue in queues:
            for server in servers:
                if id(server) in failed:
                    continue  # never re-send to a server that failed in this call
                result = self._attempt(server, [queue], reliable=reliable)
                if result is _FAILED:
                    failed.add(id(server))
                    continue
                answered = True
                if result is not None:
                    return result, True
        return None, answered

    def _wait(self, queues: Sequence[str], remaining: float,
              reliable: bool) -> tuple[Taken | None, str]:
        servers = self.pool.live()
        for server in servers:
            caps = self._capabilities(server)
            if caps is None:
                continue
            if not caps.blocking_get or (len(queues) > 1 and not (caps.priority and caps.peek)):
                return None, _POLL
            wait = remaining if len(servers) == 1 else min(remaining, self.multi_server_slice)
            if len(queues) == 1:
                result = self._attempt(server, queues, wait=wait, reliable=reliable)
            else:
                result = self._attempt(server, queues, wait=wait, peek=True)
                if result is not None and result is not _FAILED:
                    return None, _WOKEN  # the next sweep takes in priority order
            if result is _FAILED:
                continue
            return result, _WAITED
        return None, _POLL

    def _require_everywhere(self, queues: Sequence[str]) -> None:
        """Reliable reads fail loudly if any live server lacks them, rather
        than working or not depending on which server has an item."""
        for server in self.pool.live():
            caps = self._capabilities(server)
            if caps is not None:
                _require(caps, server, queues[:1], reliable=True, peek=False)

    def _capabilities(self, server: Server) -> Capabilities | None:
        try:
            with server.connection() as conn:
                return conn.capabilities
        except ConnectionFailed:
            return None

    def _attempt(self, server: Server, queues: Sequence[str], *, wait: float = 0.0,
                 reliable: bool = False, peek: bool = False) -> Taken | None | object:
        """One get on one server. Returns a Taken, None (empty), or _FAILED."""
        conn = server.checkout()
        keep_open = False   # an /open item holds its connection until close/abort
        clean = False       # the stream is in step: the connection can be pooled
        try:
            try:
                caps = conn.open()
                _require(caps, server, queues, reliable=reliable, peek=peek)
                key = build_key(queues, wait=wait, open_=reliable, peek=peek)
                got = conn.fetch(key, wait)
            except ConnectionFailed as exc:
                server.mark_dead(exc)
                if exc.request_sent and not (reliable or peek):
                    log.warning("get %s on %s broke after it was sent: an item it dequeued "
                                "is lost; not retried", "|".join(queues), server.address)
                return _FAILED
            except ClientError:
                clean = True
                raise
            clean = True
            if got is None:
                return None
            data, flags = got
            keep_open = reliable
            return Taken(server, queues[0], data, flags, conn if reliable else None)
        finally:
            if not keep_open:
                server.checkin(conn, reusable=clean)

    def _finish(self, taken: Taken, key: bytes, *, confirming: bool) -> None:
        conn, server = taken.connection, taken.server
        assert conn is not None, "only /open items are confirmed or aborted"
        taken.connection = None  # finish at most once
        try:
            conn.fetch(key)
        except ConnectionFailed as exc:
            server.checkin(conn, reusable=False)
            server.mark_dead(exc)
            if confirming:
                raise ConfirmFailed(f"confirming {taken.queue} on {server.address} failed; "
                                    "the server will deliver it again") from exc
            log.warning("abort of %s on %s failed; the dropped connection aborts it",
                        taken.queue, server.address)
            return
        except BaseException as exc:
            server.checkin(conn, reusable=False)  # closing aborts the item server-side
            if confirming or not isinstance(exc, Exception):
                raise
            log.exception("abort of %s on %s failed", taken.queue, server.address)
            return
        server.checkin(conn)


def _require(caps: Capabilities, server: Server, queues: Sequence[str], *,
             reliable: bool, peek: bool) -> None:
    missing = None
    if reliable and not caps.reliable_read:
        missing = "reliable reads (/open, /close, /abort)"
    elif peek and not caps.peek:
        missing = "peek (/peek)"
    elif len(queues) > 1 and not caps.priority:
        missing = "priority alternatives (a|b)"
    if missing:
        raise UnsupportedFeature(f"server {server.address} (version {caps.version!r}) "
                                 f"does not support {missing}")
