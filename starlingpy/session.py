"""Per-connection logic: Command -> reply bytes, and the owner id under
which the store keeps this connection's open (reliable-read) items. No
sockets here, so it is tested without the network; the TCP shell owns all
network I/O. It talks to storage only through the
:class:`~starlingpy.store.Store` interface.

Most commands answer synchronously, which keeps the hot path free of
coroutine overhead. A command that has to wait (a ``get`` with ``/t=``, or
any command whose store call answered with a Pending) returns a
:class:`~starlingpy.store.Pending`; the shell awaits ``pending.wait()`` for
the reply.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

from starlingpy import __version__
from starlingpy.counters import ServerCounters, queue_stats_lines, server_stats_pairs
from starlingpy.protocol import commands as c
from starlingpy.protocol import replies
from starlingpy.store import Pending, Store, StoreError

log = logging.getLogger("starlingpy.session")

ERROR_ITEM_OPEN = b"CLIENT_ERROR an item is open on this queue; close or abort it first\r\n"
SHUTDOWN_DISABLED = b"ERROR: shutdown not enabled\r\n"
STATS_CHUNK = 500  # queues formatted between checkpoints in a large stats reply
_owner_ids = itertools.count(1)


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


async def _then(answer: Pending, reply: Callable) -> bytes:
    """Await a store's answer, then make the reply from it."""
    return reply(await answer.wait())


async def _store_error_as_reply(reply: Pending) -> bytes:
    """A command's later reply; a StoreError met on the way is the reply,
    as for one raised at once (the connection lives on)."""
    try:
        return await reply.wait()
    except StoreError as error:
        return error.reply + b"\r\n"


class Session:
    """One connection's state. Its open items are held in the store under
    ``owner``, a number unique in this process."""

    def __init__(self, store: Store, counters: ServerCounters, control: ServerControl,
                 gate=None) -> None:
        self.store = store
        self.gate = gate  # starlingpy.auth.Gate when the server checks who may do what
        self.counters = counters
        self.control = control
        self.owner = next(_owner_ids)
        self.quit = False
        self._handlers = {
            c.Set: self._set, c.Get: self._get, c.Delete: self._delete, c.Flush: self._flush,
            c.FlushAll: self._flush_all, c.Stats: self._stats, c.Version: self._version,
            c.Verbosity: self._verbosity, c.Quit: self._quit, c.Shutdown: self._shutdown,
        }

    def execute(self, command: c.Command) -> bytes | Pending[bytes]:
        """The reply to ``command`` (b"" for none), or a Pending of it."""
        if self.gate is not None:
            refusal = self.gate.check(command)  # bytes, or a login to await
            if refusal is not None:
                if refusal.__class__ is not bytes:
                    return Pending(partial(refusal.finish, self))
                return refusal
        try:
            reply = self._handlers[command.__class__](command)
        except StoreError as error:
            return error.reply + b"\r\n"
        if reply.__class__ is Pending:
            return Pending(partial(_store_error_as_reply, reply))
        return reply

    def release(self) -> Pending[None] | None:
        """The connection is gone: its open items go back to the head."""
        return self.store.release(self.owner)

    # -- set -------------------------------------------------------------

    def _set(self, command: c.Set) -> bytes | Pending[bytes]:
        self.counters.cmd_set += 1
        if command.delay_ms or command.unique is not None:
            stored = self.store.put(command.queue, command.data, command.flags, command.exptime,
                                    delay_ms=command.delay_ms, unique=command.unique)
        else:
            stored = self.store.put(command.queue, command.data, command.flags, command.exptime)
        if stored.__class__ is Pending:
            return Pending(partial(_then, stored, partial(_set_reply, command.noreply)))
        return _set_reply(command.noreply, stored)

    # -- get -------------------------------------------------------------

    def _get(self, command: c.Get) -> bytes | Pending[bytes]:
        keys = command.keys
        if len(keys) == 1:
            key = keys[0]
            if not (key.timeout_ms or key.open or key.close or key.abort or key.peek
                    or self.store.holds_open(self.owner)):
                # The common get: one plain key that will not wait, and no open
                # item of ours that could refuse it; no refusal pass, no join.
                item = self.store.take(key.queues)
                if item.__class__ is Pending:
                    found = Pending(partial(_then, item, partial(_value, key.raw, command.cas)))
                    return Pending(partial(self._finish_get, command, 0, [], found))
                counters = self.counters
                counters.cmd_get += 1
                if item is None:
                    counters.get_misses += 1
                    return replies.END
                counters.get_hits += 1
                return replies.value(key.raw, item.flags, item.data, command.cas) + replies.END
        for key in keys:
            error = self._refusal(key)
            if error:
                return error
        return self._continue_get(command, 0, [])

    def _continue_get(self, command: c.Get, start: int, parts: list[bytes]) -> bytes | Pending:
        keys = command.keys
        for index in range(start, len(keys)):
            key = keys[index]
            found = self._try_key(key, command.cas, first_try=True)
            if found.__class__ is Pending or (found is None and key.timeout_ms
                                               and not self.control.closing):
                return Pending(partial(self._finish_get, command, index, parts, found))
            self.counters.cmd_get += 1
            self._count(found)
            if found:
                parts.append(found)
        parts.append(replies.END)
        return b"".join(parts)

    async def _finish_get(self, command: c.Get, index: int, parts: list[bytes],
                          found: bytes | Pending | None) -> bytes:
        """Go on with a get from key ``index``, whose first try gave
        ``found``: await what is pending, wait out ``/t=``, then the rest."""
        keys, cas = command.keys, command.cas
        while True:
            key = keys[index]
            if found.__class__ is Pending:
                found = await found.wait()
            if found is None and key.timeout_ms and not self.control.closing:
                deadline = trio.current_time() + key.timeout_ms / 1000
                with self.control.interruptible():
                    while found is None and trio.current_time() < deadline:
                        await self.store.wait_for_item(key.queues, deadline)
                        found = self._try_key(key, cas, first_try=False)
                        if found.__class__ is Pending:
                            found = await found.wait()
            self.counters.cmd_get += 1
            self._count(found)
            if found:
                parts.append(found)
            index += 1
            if index == len(keys):
                parts.append(replies.END)
                return b"".join(parts)
            found = self._try_key(keys[index], cas, first_try=True)

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
        if key.abort or key.peek or key.close:
            return None
        if self.store.holds_open(self.owner, key.queues):
            return ERROR_ITEM_OPEN
        return None

    def _try_key(self, key: c.GetKey, cas: bool, first_try: bool) -> bytes | Pending | None:
        """The VALUE block for one key, None when nothing is there, or a
        Pending of either."""
        if first_try and (key.abort or key.close):
            store = self.store
            settled = (store.abort_item(key.queues, self.owner) if key.abort
                       else store.close_item(key.queues, self.owner))
            if key.abort or not key.open:
                if settled.__class__ is Pending:
                    return Pending(partial(_then, settled, _nothing))
                return None
            if settled.__class__ is Pending:
                return Pending(partial(self._take_after, settled, key, cas))
        item = self._take(key)
        if item.__class__ is Pending:
            return Pending(partial(_then, item, partial(_value, key.raw, cas)))
        return None if item is None else replies.value(key.raw, item.flags, item.data, cas)

    def _take(self, key: c.GetKey):
        if key.peek:
            return self.store.peek(key.queues)
        if key.open:
            return self.store.open_item(key.queues, self.owner)
        return self.store.take(key.queues)

    async def _take_after(self, settled: Pending, key: c.GetKey, cas: bool) -> bytes | None:
        """``/close/open`` on a store that answered the close later."""
        await settled.wait()
        item = self._take(key)
        if item.__class__ is Pending:
            item = await item.wait()
        return _value(key.raw, cas, item)

    # -- the rest ----------------------------------------------------------

    def _delete(self, command: c.Delete) -> bytes | Pending[bytes]:
        deleted = self.store.delete(command.queue)
        reply = partial(_delete_reply, command.noreply)
        if deleted.__class__ is Pending:
            return Pending(partial(_then, deleted, reply))
        return reply(deleted)

    def _flush(self, command: c.Flush) -> bytes | Pending[bytes]:
        return _when_done(self.store.flush(command.queue), replies.END)

    def _flush_all(self, command: c.FlushAll) -> bytes | Pending[bytes]:
        # Client libraries send flush_all casually; a queue server empties
        # nothing unless its operator said so.
        reply = b"" if command.noreply else replies.OK
        if self.control.flush_all_empties:
            return _when_done(self.store.flush_all(), reply)
        return reply

    def _stats(self, command: c.Stats) -> bytes | Pending[bytes]:
        snapshot = self.store.statistics()
        if snapshot.__class__ is Pending:
            return Pending(partial(self._stats_later, snapshot))
        if self.gate is not None:
            snapshot = self.gate.visible(snapshot)
        if len(snapshot) > STATS_CHUNK:
            return Pending(partial(self._stats_in_chunks, snapshot))
        return self._stats_reply(snapshot)

    def _stats_head(self, snapshot: dict) -> bytes:
        pairs = server_stats_pairs(self.counters, snapshot, self.control.limit_maxbytes)
        return replies.stat_lines(pairs)

    def _stats_reply(self, snapshot: dict) -> bytes:
        return self._stats_head(snapshot) + queue_stats_lines(snapshot.items()) + replies.END

    async def _stats_later(self, snapshot: Pending) -> bytes:
        snapshot = await snapshot.wait()
        if self.gate is not None:
            snapshot = self.gate.visible(snapshot)
        return await self._stats_in_chunks(snapshot)

    async def _stats_in_chunks(self, snapshot: dict) -> bytes:
        """The reply for many queues, formatted a chunk at a time with a
        checkpoint between chunks, so other clients are served meanwhile
        (the snapshot itself was taken at one moment)."""
        parts = [self._stats_head(snapshot)]
        entries = list(snapshot.items())
        for start in range(0, len(entries), STATS_CHUNK):
            parts.append(queue_stats_lines(entries[start:start + STATS_CHUNK]))
            await trio.lowlevel.checkpoint()
        parts.append(replies.END)
        return b"".join(parts)

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


def _set_reply(noreply: bool, stored: bool) -> bytes:
    if noreply:
        return b""
    return replies.STORED if stored else replies.NOT_STORED


def _delete_reply(noreply: bool, deleted: bool) -> bytes:
    if noreply:
        return b""
    return replies.DELETED if deleted else replies.NOT_FOUND


def _value(raw: bytes, cas: bool, item) -> bytes | None:
    return None if item is None else replies.value(raw, item.flags, item.data, cas)


def _nothing(_answer) -> None:
    return None


def _when_done(answer, reply: bytes) -> bytes | Pending[bytes]:
    """``reply`` once the store's ``answer`` (a value or a Pending) is in."""
    if answer.__class__ is Pending:
        return Pending(partial(_then, answer, lambda _: reply))
    return reply
