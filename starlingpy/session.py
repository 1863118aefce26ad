"""Per-connection logic: Command -> reply bytes, and the open (reliable-read)
items a connection holds.  No sockets here, so it is tested without the
network; the TCP shell owns all network I/O.

The one asynchronous step is a ``get`` that has to wait (``/t=``):
``execute`` then returns a ``PendingGet`` and the shell awaits
``finish_get``.  Everything else answers synchronously, which keeps the hot
path free of coroutine overhead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

from starlingpy import __version__
from starlingpy.collection import QueueCollection
from starlingpy.counters import ServerCounters, stats_pairs
from starlingpy.protocol import commands as c
from starlingpy.protocol import replies

log = logging.getLogger("starlingpy.session")

ERROR_ITEM_OPEN = b"CLIENT_ERROR an item is open on this queue; close or abort it first\r\n"
SHUTDOWN_DISABLED = b"ERROR: shutdown not enabled\r\n"


@dataclass
class ServerControl:
    """What a session may ask of the server as a whole.

    ``interruptible()`` wraps a wait that a graceful shutdown must cut short;
    ``closing`` is true once shutdown began.
    """

    enable_shutdown: bool = False
    flush_all_empties: bool = False
    limit_maxbytes: int = 0
    request_shutdown: Callable[[], None] = lambda: None
    closing: bool = False
    _scopes: set = field(default_factory=set)

    @contextmanager
    def interruptible(self) -> Iterator[trio.CancelScope]:
        scope = trio.CancelScope()
        if self.closing:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def interrupt_all(self) -> None:
        self.closing = True
        for scope in list(self._scopes):
            scope.cancel()


@dataclass
class PendingGet:
    """A get whose key ``index`` found nothing and may wait until ``deadline``."""

    command: c.Get
    index: int
    parts: list[bytes]
    deadline: float


class Session:
    """One connection's state.  ``owner`` identity for open items is the session."""

    def __init__(self, collection: QueueCollection, counters: ServerCounters,
                 control: ServerControl, gate=None) -> None:
        self.collection = collection
        self.gate = gate  # starlingpy.auth.Gate when the server checks who may do what
        self.counters = counters
        self.control = control
        self.open_queues: set = set()  # queues holding an open item of ours
        self.quit = False
        self._handlers = {
            c.Set: self._set, c.Get: self._get, c.Delete: self._delete, c.Flush: self._flush,
            c.FlushAll: self._flush_all, c.Stats: self._stats, c.Version: self._version,
            c.Verbosity: self._verbosity, c.Quit: self._quit, c.Shutdown: self._shutdown,
        }

    def execute(self, command: c.Command) -> bytes | PendingGet:
        """The reply to ``command`` (b"" for none), or a PendingGet to await."""
        if self.gate is not None:
            refusal = self.gate.check(command)  # bytes, or a login to await
            if refusal is not None:
                return refusal
        return self._handlers[command.__class__](command)

    def release(self) -> None:
        """The connection is gone: its open items go back to the head."""
        for queue in self.open_queues:
            queue.release_owner(self)
        self.open_queues.clear()

    # -- set -------------------------------------------------------------

    def _set(self, command: c.Set) -> bytes:
        self.counters.cmd_set += 1
        queue = self.collection.get_or_create(command.queue)
        stored = queue.put(command.data, command.flags, command.exptime)
        if command.noreply:
            return b""
        return replies.STORED if stored else replies.NOT_STORED

    # -- get -------------------------------------------------------------

    def _get(self, command: c.Get) -> bytes | PendingGet:
        keys = command.keys
        if len(keys) == 1 and not self.open_queues and not keys[0].timeout_ms:
            # The common get: one key that will not wait, and no open item of
            # ours that could refuse it; no refusal pass, no join.
            self.counters.cmd_get += 1
            found = self._try_key(keys[0], command.cas, first_try=True)
            self._count(found)
            return found + replies.END if found else replies.END
        for key in keys:
            error = self._refusal(key)
            if error:
                return error
        return self._continue_get(command, 0, [])

    def _continue_get(self, command: c.Get, start: int, parts: list[bytes]) -> bytes | PendingGet:
        keys = command.keys
        for index in range(start, len(keys)):
            key = keys[index]
            self.counters.cmd_get += 1
            found = self._try_key(key, command.cas, first_try=True)
            if found is None and key.timeout_ms and not self.control.closing:
                deadline = trio.current_time() + key.timeout_ms / 1000
                self.counters.cmd_get -= 1  # counted once, when it resolves
                return PendingGet(command, index, parts, deadline)
            self._count(found)
            if found:
                parts.append(found)
        parts.append(replies.END)
        return b"".join(parts)

    async def finish_get(self, pending: PendingGet) -> bytes:
        """Wait for the pending key's item (or its deadline), then finish the get."""
        if pending.__class__ is not PendingGet:  # the gate's login (a password check)
            return await pending.finish(self)
        command, index = pending.command, pending.index
        key = command.keys[index]
        queues = [self.collection.get_or_create(name) for name in key.queues]
        found = None
        with self.control.interruptible():
            while found is None and trio.current_time() < pending.deadline:
                await self.collection.wait_for_put(queues, pending.deadline)
                found = self._try_key(key, command.cas, first_try=False)
        self.counters.cmd_get += 1
        self._count(found)
        parts = pending.parts
        if found:
            parts.append(found)
        result = self._continue_get(command, index + 1, parts)
        if isinstance(result, PendingGet):  # a later key waits too
            return await self.finish_get(result)
        return result

    def _count(self, found: bytes | None) -> None:
        if found:
            self.counters.get_hits += 1
        else:
            self.counters.get_misses += 1

    def _refusal(self, key: c.GetKey) -> bytes | None:
        """Checked for every key before any item is taken, so an error never
        leaves an item taken and unanswered."""
        # abort, peek and close (including /close/open, whose close frees
        # the slot first) are never refused.
        if key.abort or key.peek or key.close or not self.open_queues:
            return None
        for name in key.queues:
            queue = self.collection.get(name)
            if queue is not None and queue.has_open(self):
                return ERROR_ITEM_OPEN
        return None

    def _try_key(self, key: c.GetKey, cas: bool, first_try: bool) -> bytes | None:
        """The VALUE block for one key, or None when nothing is there."""
        collection = self.collection
        if first_try and (key.abort or key.close):
            for name in key.queues:
                queue = collection.get(name)
                if queue is None:
                    continue
                done = queue.abort_open(self) if key.abort else queue.close_open(self)
                if done:
                    self.open_queues.discard(queue)
            if key.abort or not key.open:
                return None
        for name in key.queues:
            queue = collection.get(name)
            if queue is None:
                continue
            if key.peek:
                item = queue.peek_nowait()
            elif key.open:
                item = queue.open_nowait(self)
                if item is not None:
                    self.open_queues.add(queue)
            else:
                item = queue.take_nowait()
            if item is not None:
                return replies.value(key.raw, item.flags, item.data, cas)
        return None

    # -- the rest ----------------------------------------------------------

    def _delete(self, command: c.Delete) -> bytes:
        queue = self.collection.get(command.queue)
        if queue is not None:
            self.open_queues.discard(queue)
        deleted = self.collection.delete(command.queue)
        if command.noreply:
            return b""
        return replies.DELETED if deleted else replies.NOT_FOUND

    def _flush(self, command: c.Flush) -> bytes:
        queue = self.collection.get(command.queue)
        if queue is not None:
            queue.flush()
        return replies.END

    def _flush_all(self, command: c.FlushAll) -> bytes:
        # Client libraries send flush_all casually; a queue server empties
        # nothing unless its operator said so.
        if self.control.flush_all_empties:
            self.collection.flush_all()
        return b"" if command.noreply else replies.OK

    def _stats(self, command: c.Stats) -> bytes:
        queue_stats = self.collection.statistics()
        if self.gate is not None:
            queue_stats = self.gate.visible(queue_stats)
        pairs = stats_pairs(self.counters, queue_stats, self.control.limit_maxbytes)
        return replies.stats(pairs)

    def _version(self, command: c.Version) -> bytes:
        return replies.version(f"starlingpy {__version__}")

    def _verbosity(self, command: c.Verbosity) -> bytes:
        return b"" if command.noreply else replies.OK

    def _quit(self, command: c.Quit) -> bytes:
        self.quit = True
        return b""

    def _shutdown(self, command: c.Shutdown) -> bytes:
        if not self.control.enable_shutdown:
            return SHUTDOWN_DISABLED
        log.warning("shutdown requested by a client")
        self.control.request_shutdown()
        self.quit = True
        return replies.OK
