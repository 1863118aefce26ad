"""The PostgreSQL store: every queue in one database, shared by any number
of servers, each of them a stateless front-end.

**One table for all queues** (``starling_items``, keyed by a global
identity column that gives FIFO order), beside one row of counters per
queue (``starling_queues``). One table because queues are made by a client's
first ``set`` to any name: one table per queue would mean DDL on the hot
path, a catalog that grows with every name, and a statistics query over
thousands of tables. Here a queue's head is the first row of a partial index
on ``(queue, id)`` over the items nobody holds, and ``stats`` is one
``GROUP BY``: one statement, so one consistent snapshot.

**Churn without bloat:** a queue table is all inserts and deletes. The
store VACUUMs it once enough rows are dead (autovacuum may be off, or its
default threshold too lax for such a table). VACUUM cannot remove rows that
a long transaction elsewhere may still see (the xmin horizon), and claims
then walk ever more dead index entries; so the table is split in two list
partitions: sets go to the current one, and once it passes
``ROTATE_BYTES`` they switch to the other; the old one, drained by the
takes (its ids are lower, so it drains first), is TRUNCATEd, which frees
its rows at once whatever the horizon. Ids come from one sequence, so order
holds across the two.

**Claims** lock the head row with ``FOR UPDATE SKIP LOCKED``: two servers
(or two connections of one) never get the same row, and neither waits for
the other. A take deletes the row in the same transaction, and the reply
goes only after its commit, so an item handed out is never handed out again.

**Leases:** an ``/open`` item stays in its row, marked with the holder
(this server's ``identity`` and the connection's owner id) and a lease end
``lease`` seconds ahead, renewed by the holder every third of it. ``/close``
deletes the row; ``/abort``, a closed connection, a lease run out (a dead
server) or a restart under the same identity clear the mark: the item is
back at its original position, since order is the row's id.

**Batching:** a ``set`` on a queue without ``max_items``/``max_bytes`` is
buffered and answered True at once; ``commit()`` (which the shell awaits
before sending any reply) writes every buffered item of every connection in
one transaction: one INSERT round and one COMMIT per round, rounds one
after another. A set on a limited queue, and every other call, first waits
for the buffered items, so each connection sees its own sets.

**Threads, not an async driver:** psycopg's async connection needs asyncio's
event loop and does not run under trio, so each database call runs on a
plain (blocking) psycopg connection in a worker thread
(``trio.to_thread.run_sync``), from a small pool: the trio thread never
waits on the network, and a connection is only ever used by one thread at
a time. A lost connection is dropped and the call answers
``SERVER_ERROR store unavailable``; the next call connects again, so the
server recovers by itself when the database comes back.

**Wake-ups across servers:** a commit that makes items available sends
``NOTIFY``; one thread per server ``LISTEN``s and wakes readers parked on
those names. A parked reader also polls every ``poll_interval`` seconds, so
waiting still works where notifications do not arrive (a
transaction-pooling PgBouncer).

Counters kept per server, not in the database: ``age`` (of the last item
this server handed out), ``waiters`` (readers parked here), and which
queues exist (``exists`` is answered from memory: names seen here, refreshed
by each ``stats``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from ..queue import MAX_FLAGS, NO_LIMITS, Item, Owner, QueueLimits, QueueStatistics, Waiters, expiry_time, wake_one
from .interface import Pending, StoreError
from .local import TOO_MANY_QUEUES

log = logging.getLogger("starlingpy.store.postgres")

UNAVAILABLE = b"SERVER_ERROR store unavailable"
DEFAULT_LEASE = 30.0
DEFAULT_POOL_SIZE = 4
DEFAULT_POLL_INTERVAL = 1.0
CONNECT_TIMEOUT = 5  # seconds: an unreachable database answers SERVER_ERROR, not a hang
NOTIFY_CHANNEL = "starlingpy"
_INIT_LOCK = 0x5374_6172  # advisory lock key: servers starting together create the schema once
_VACUUM_LOCK = 0x5374_6173  # advisory lock key: one server vacuums at a time
VACUUM_AFTER = 20_000  # dead rows in the items table
ROTATE_BYTES = 1024 * 1024  # an items partition this large: sets go to the other one
VACUUM_CHECK_SECONDS = 2.0

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS starling_queues (
    name bytea PRIMARY KEY
);
-- Counters by queue and by server: each server adds to its own row, so
-- servers never wait on one another's counter updates.
CREATE TABLE IF NOT EXISTS starling_counters (
    name bytea NOT NULL,
    server text NOT NULL,
    total_items bigint NOT NULL DEFAULT 0,
    expired_items bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (name, server)
);
-- Items live in one of two partitions (slot 0 or 1); sets go to the
-- current one. Once it is bloated, sets switch to the other, and the old one
-- is TRUNCATEd as soon as it is drained: its dead rows go at once, even
-- while a long transaction holds back what VACUUM may remove.
CREATE SEQUENCE IF NOT EXISTS starling_item_ids;
CREATE TABLE IF NOT EXISTS starling_rotation (
    current smallint NOT NULL,
    one boolean PRIMARY KEY DEFAULT true CHECK (one)
);
INSERT INTO starling_rotation (current) VALUES (0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS starling_items (
    id bigint NOT NULL DEFAULT nextval('starling_item_ids'),   -- the queues' order
    slot smallint NOT NULL DEFAULT 0,
    queue bytea NOT NULL,
    data bytea NOT NULL,
    flags bigint NOT NULL,
    expiry double precision NOT NULL,   -- unix time; 0: never
    added double precision NOT NULL,    -- unix time
    lease_server text,                  -- an open item: who holds it, and until when
    lease_conn bigint,
    lease_until timestamptz,
    PRIMARY KEY (id, slot)
) PARTITION BY LIST (slot);
CREATE TABLE IF NOT EXISTS starling_items_0 PARTITION OF starling_items FOR VALUES IN (0);
CREATE TABLE IF NOT EXISTS starling_items_1 PARTITION OF starling_items FOR VALUES IN (1);
CREATE INDEX IF NOT EXISTS starling_items_ready
    ON starling_items (queue, id) WHERE lease_server IS NULL;
CREATE INDEX IF NOT EXISTS starling_items_leased
    ON starling_items (lease_server, lease_conn) WHERE lease_server IS NOT NULL;
CREATE TABLE IF NOT EXISTS starling_imported (
    source text PRIMARY KEY,            -- what `store import` copied already
    records bigint NOT NULL
);
"""

_UNLEASE = "UPDATE starling_items SET lease_server = NULL, lease_conn = NULL, lease_until = NULL"


def libpq_url(url: str) -> str:
    """The URL libpq understands: SQLAlchemy's ``postgresql+psycopg://``
    spelling is accepted too; everything else (several hosts,
    ``target_session_attrs``) is passed on as it is."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith("postgresql+"):
        return "postgresql://" + rest
    if sep and scheme.startswith("postgres+"):
        return "postgres://" + rest
    return url


def default_identity(port: int) -> str:
    """This server's name in leases: the same after a restart on the same
    machine and port, different for two servers side by side (a server on
    a port picked by the system is never the same one again)."""
    if port == 0:
        return f"{socket.gethostname()}:pid{os.getpid()}:{time.time():.0f}"
    return f"{socket.gethostname()}:{port}"


def open_configured(config, port: int) -> PostgresStore:
    """The store a server's configuration asks for (``[store] kind = "postgresql"``)."""
    settings = config.store
    if not settings.url:
        raise StoreError(b"SERVER_ERROR no url", "the postgresql store needs a url "
                         "([store] url = ... or serve --store URL)")
    return PostgresStore.open(
        settings.url, identity=settings.identity or default_identity(port),
        default_limits=config.default_limits, limits_by_name=config.limits_by_name,
        lease=settings.lease, pool_size=settings.pool_size,
        max_queues=settings.max_queues or None)


class _Connections:
    """A few blocking psycopg connections, each used by one worker thread
    at a time; made when needed, dropped when broken."""

    def __init__(self, conninfo: str, size: int, schema: str | None, name: str = "starlingpy") -> None:
        self._conninfo = conninfo
        self._name = name  # application_name: operators (and tests) tell servers apart
        self._schema = schema
        self._idle: list = []
        self._limiter = trio.CapacityLimiter(size)
        self._closed = False

    def connect(self):
        import psycopg

        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   application_name=self._name[:63])
        except psycopg.OperationalError as error:
            raise StoreError(UNAVAILABLE, f"cannot connect to the database: {error}") from None
        if self._schema:
            conn.execute(f'SET search_path TO "{self._schema}"')
        return conn

    def run_now(self, work: Callable, *args):
        """``work(conn, *args)`` on this thread (start-up, the command line)."""
        result, conn = self._in_thread(None, work, args)
        if conn is not None:
            conn.close()
        if result.__class__ is StoreError:
            raise result
        return result

    async def run(self, work: Callable, *args):
        """``work(conn, *args)`` in a worker thread, on a pooled connection."""
        if self._closed:
            raise StoreError(UNAVAILABLE, "store is closed")
        async with self._limiter:
            conn = self._idle.pop() if self._idle else None
            result, conn = await trio.to_thread.run_sync(self._in_thread, conn, work, args)
            if conn is not None:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)
            if result.__class__ is StoreError:
                raise result
            return result

    def _in_thread(self, conn, work: Callable, args: tuple):
        import psycopg

        try:
            if conn is None or conn.closed:
                conn = self.connect()
            return work(conn, *args), conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            log.warning("database connection lost: %s", error)
            if conn is not None:
                conn.close()
            return StoreError(UNAVAILABLE, str(error)), None
        except StoreError as error:
            return error, conn

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()


@dataclass
class _Round:
    """Puts written in one transaction. ``entries``: ``(name, data, flags,
    expiry, added, limited)``; ``stored[i]`` says whether entry i was kept."""
    entries: list = field(default_factory=list)
    stored: list[bool] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    error: StoreError | None = None


@dataclass
class _Takers:
    """Takes of one queue claimed by one statement."""
    wanted: int = 0
    items: list[Item] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    error: StoreError | None = None


HELD_UNSUPPORTED = b"SERVER_ERROR delayed and unique items are not supported by the postgresql store"


class PostgresStore:
    """Queues in a PostgreSQL database, shared with every other server on it."""

    def __init__(self, url: str, *, identity: str, schema: str | None = None,
                 default_limits: QueueLimits = NO_LIMITS,
                 limits_by_name: Mapping[bytes, QueueLimits] = {},
                 clock: Callable[[], float] = time.time, lease: float = DEFAULT_LEASE,
                 pool_size: int = DEFAULT_POOL_SIZE,
                 poll_interval: float = DEFAULT_POLL_INTERVAL, max_queues: int | None = None) -> None:
        self.url = libpq_url(url)
        self.identity = identity
        self.schema = schema
        self.clock = clock
        self.lease = lease
        self.poll_interval = poll_interval
        self.max_queues = max_queues
        self._default_limits = default_limits
        self._limits_by_name = dict(limits_by_name)
        self._channel = f"{NOTIFY_CHANNEL}_{schema}" if schema else NOTIFY_CHANNEL
        self._db = _Connections(self.url, pool_size, schema, f"starlingpy {identity}")
        self._waiters = Waiters()
        self._known: set[bytes] = set()  # queue names seen (exists() answers from memory)
        self._age: dict[bytes, float] = {}  # seconds the last item handed out here had waited
        self._open_names: dict[Owner, set[bytes]] = {}
        self._round = _Round()  # buffered puts not written yet
        self._last_round: _Round | None = None  # the latest round given items
        self._round_lock: trio.Lock | None = None
        self._takers: dict[bytes, _Takers] = {}  # takes of a queue waiting to be claimed together
        self._claim_locks: dict[bytes, trio.Lock] = {}  # one claim of a queue in flight at a time
        self._closed = False

    @classmethod
    def open(cls, url: str, **kwargs) -> PostgresStore:
        """A store over ``url``: the schema made if missing, and the leases
        an earlier run under the same identity held let go (they come back
        to their queues). Raises StoreError if the database is unreachable."""
        store = cls(url, **kwargs)
        store._db.run_now(create_schema, store.schema)
        released = store._db.run_now(_release_identity, store.identity, store._channel)
        if released:
            log.info("released %d open items held by an earlier run of %s", released, store.identity)
        return store

    def _limits(self, name: bytes) -> QueueLimits:
        return self._limits_by_name.get(name, self._default_limits)

    # -- queues ------------------------------------------------------------

    def exists(self, name: bytes) -> bool:
        return name in self._known

    def put(self, name: bytes, data: bytes, flags: int, exptime: int, *, delay_ms: int = 0,
            unique: bytes | None = None):
        if delay_ms or unique is not None:
            raise StoreError(HELD_UNSUPPORTED)
        if not 0 <= flags <= MAX_FLAGS:
            raise ValueError(f"flags must fit in 32 bits, not {flags}")
        if self._closed:
            raise StoreError(UNAVAILABLE, "store is closed")
        limits = self._limits(name)
        if limits.max_item_size is not None and len(data) > limits.max_item_size:
            return False
        if (self.max_queues is not None and name not in self._known
                and len(self._known) >= self.max_queues):
            raise StoreError(TOO_MANY_QUEUES)
        now = self.clock()
        expiry = expiry_time(exptime, now, limits.max_age)
        limited = limits.max_items is not None or limits.max_bytes is not None
        current = self._round
        current.entries.append((name, data, flags, expiry, now, limited))
        self._last_round = current
        self._known.add(name)
        slot = self._waiters.slot(name)
        if slot:  # a reader woken now takes after this round is written
            wake_one(slot)
        else:
            self._waiters.forget_if_idle(name)
        if not limited:
            return True
        return Pending(partial(self._decided, current, len(current.entries) - 1))

    async def _decided(self, current: _Round, index: int) -> bool:
        await self._write_round(current)
        return current.stored[index]

    def delete(self, name: bytes):
        for names in self._open_names.values():
            names.discard(name)
        self._known.discard(name)
        return self._later(_delete_queue, name)

    def flush(self, name: bytes):
        return self._later(_flush_queues, [name])

    def flush_all(self):
        return self._later(_flush_queues, None)

    # -- taking ------------------------------------------------------------

    def take(self, names: Sequence[bytes]):
        if len(names) == 1:
            return Pending(partial(self._take_together, names[0]))
        return Pending(partial(self._claim, list(names), "take", None))

    def peek(self, names: Sequence[bytes]):
        return Pending(partial(self._claim, list(names), "peek", None))

    def open_item(self, names: Sequence[bytes], owner: Owner):
        return Pending(partial(self._claim, list(names), "open", owner))

    async def _claim(self, names: list[bytes], how: str, owner: Owner) -> Item | None:
        await self._settle_puts()
        lease = (self.identity, owner, self.lease) if how == "open" else None
        found = await self._db.run(_claim, names, how, lease, self.clock(), self.identity)
        if found is None:
            return None
        name, item = found
        if how != "peek":
            self._age[name] = self.clock() - item.added
        if how == "open":
            self._open_names.setdefault(owner, set()).add(name)
        return item

    async def _take_together(self, name: bytes) -> Item | None:
        """A take of one queue, claimed together with the takes of that
        queue that arrive while the claim before is in flight: one statement
        and one commit for all of them, items handed out in arrival order."""
        await self._settle_puts()
        group = self._takers.get(name)
        if group is None:
            group = self._takers[name] = _Takers()
        place = group.wanted
        group.wanted += 1
        if place == 0:  # the first taker claims for its group, once the claim before is done
            with trio.CancelScope(shield=True):  # the others wait on it
                lock = self._claim_locks.get(name)
                if lock is None:
                    lock = self._claim_locks[name] = trio.Lock()
                async with lock:
                    if self._takers.get(name) is group:
                        del self._takers[name]  # takers from now on form the next group
                    try:
                        group.items = await self._db.run(_take_many, name, group.wanted,
                                                         self.clock(), self.identity)
                    except StoreError as error:
                        group.error = error
                    finally:
                        group.done.set()
                if not lock.statistics().tasks_waiting and not lock.locked():
                    self._claim_locks.pop(name, None)
        else:
            await group.done.wait()
        if group.error is not None:
            raise StoreError(group.error.reply, str(group.error))
        if place >= len(group.items):
            return None
        item = group.items[place]
        self._age[name] = self.clock() - item.added
        return item

    def close_item(self, names: Sequence[bytes], owner: Owner):
        return self._settle(names, owner, close=True)

    def abort_item(self, names: Sequence[bytes], owner: Owner):
        return self._settle(names, owner, close=False)

    def _settle(self, names: Sequence[bytes], owner: Owner, close: bool):
        held = self._open_names.get(owner)
        if not held:
            return False
        mine = [name for name in names if name in held]
        if not mine:
            return False
        held.difference_update(mine)
        if not held:
            del self._open_names[owner]
        return Pending(partial(self._settle_later, mine, owner, close))

    async def _settle_later(self, names: list[bytes], owner: Owner, close: bool) -> bool:
        await self._settle_puts()
        settled = await self._db.run(_end_leases, self.identity, owner, names, close, self._channel)
        if not close:
            self._wake(settled)
        return bool(settled)

    def holds_open(self, owner: Owner, names: Sequence[bytes] | None = None) -> bool:
        held = self._open_names.get(owner)
        if not held:
            return False
        return names is None or any(name in held for name in names)

    def release(self, owner: Owner):
        if not self._open_names.pop(owner, None):
            return None
        return Pending(partial(self._settle_later, None, owner, False))

    # -- waiting -----------------------------------------------------------

    async def wait_for_item(self, names: Sequence[bytes], deadline: float) -> None:
        """See :meth:`Store.wait_for_item`: woken by this server's puts, by
        notifications from the others, and by a poll every ``poll_interval``."""
        reader = trio.Event()
        slots = self._waiters.park(reader, names)
        try:
            while True:
                with trio.move_on_at(min(deadline, trio.current_time() + self.poll_interval)):
                    await reader.wait()
                if reader.is_set() or trio.current_time() >= deadline:
                    return
                try:
                    if await self._db.run(_any_ready, list(names)):
                        return
                except StoreError:
                    return  # the take that follows answers the error
        finally:
            self._waiters.unpark(reader, names, slots)

    def _wake(self, counts: Mapping[bytes, int]) -> None:
        """Items became available: wake as many parked readers here."""
        for name, count in counts.items():
            slot = self._waiters.slot(name)
            for _ in range(min(count, len(slot))):
                wake_one(slot)
            self._waiters.forget_if_idle(name)

    def _heard(self, payload: str) -> None:
        """A notification from a server (maybe this one): ``identity name-hex count``."""
        try:
            sender, name, count = payload.rsplit(" ", 2)
            if sender != self.identity:
                self._wake({bytes.fromhex(name): int(count)})
        except ValueError:
            log.warning("ignoring a malformed notification %r", payload)

    # -- the rest ----------------------------------------------------------

    def statistics(self):
        return Pending(self._statistics)

    async def _statistics(self) -> dict[bytes, QueueStatistics]:
        await self._settle_puts()
        rows = await self._db.run(_statistics)
        self._known = {row[0] for row in rows} | {entry[0] for entry in self._round.entries}
        stats = {}
        for name, total, expired, items, size, opened in rows:
            stats[name] = QueueStatistics(items, total, 0, expired, int(self._age.get(name, 0) * 1000),
                                          size, opened, self._waiters.count(name))
        return self._waiters.with_waited_names(stats)

    def commit(self) -> Pending[None] | None:
        if not self._round.entries:
            return None
        return Pending(partial(self._write_round, self._round))

    async def _settle_puts(self) -> None:
        """Wait until every put made so far is written (each connection
        reads its own sets)."""
        latest = self._last_round
        if latest is not None and not latest.done.is_set():
            await self._write_round(latest)

    async def _write_round(self, current: _Round) -> None:
        """Write ``current`` and the rounds before it, one transaction each,
        one at a time; raise its error if it failed."""
        if not current.done.is_set():
            if self._round_lock is None:
                self._round_lock = trio.Lock()
            async with self._round_lock:
                if not current.done.is_set():
                    if current is self._round:
                        self._round = _Round()  # puts from now on go to the next round
                    try:
                        # (readers here were woken by put itself)
                        current.stored = await self._db.run(
                            _insert_round, current.entries, self._limits, self.identity,
                            self._channel)
                    except StoreError as error:
                        current.error = error
                    finally:
                        current.done.set()
        if current.error is not None:
            raise StoreError(current.error.reply, str(current.error))

    def _later(self, work: Callable, *args) -> Pending:
        async def run():
            await self._settle_puts()
            return await self._db.run(work, *args)
        return Pending(run)

    async def run_background(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Renew this server's leases, return those of dead servers, listen
        for notifications, and vacuum the items table, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen)
            nursery.start_soon(self._vacuum)
            task_status.started()
            while True:
                await trio.sleep(self.lease / 3)
                try:
                    returned = await self._db.run(_keep_leases, self.identity, self.lease,
                                                  self._channel)
                    self._wake(returned)
                except StoreError as error:
                    log.warning("cannot renew leases: %s", error)

    async def _vacuum(self) -> None:
        """A queue table is all deletes: its dead rows are vacuumed once
        there are VACUUM_AFTER of them, by one server at a time, whether or
        not autovacuum runs (or keeps up) on this database."""
        while True:
            await trio.sleep(VACUUM_CHECK_SECONDS)
            try:
                dead = await self._db.run(_vacuum_if_dead, VACUUM_AFTER)
                if dead:
                    log.info("vacuumed the items table (%d dead rows)", dead)
            except StoreError as error:
                log.warning("cannot vacuum: %s", error)

    async def _listen(self) -> None:
        token = trio.lowlevel.current_trio_token()
        stop = threading.Event()
        try:
            await trio.to_thread.run_sync(self._listen_in_thread, token, stop,
                                          abandon_on_cancel=True)
        finally:
            stop.set()

    def _listen_in_thread(self, token, stop: threading.Event) -> None:
        import psycopg

        while not stop.is_set():
            try:
                with self._db.connect() as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    while not stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            trio.from_thread.run_sync(self._heard, note.payload, trio_token=token)
            except (psycopg.Error, StoreError) as error:
                log.warning("not hearing notifications (polling meanwhile): %s", error)
                stop.wait(self.poll_interval)
            except trio.RunFinishedError:
                return

    def observe_syncs(self, observer: Callable) -> None:
        """No fsyncs of ours to report: the database's commit is the sync."""

    def abandon(self) -> None:
        """Stop as a crash would: nothing more is written (tests)."""
        self._closed = True
        self._round = _Round()
        self._db.close()

    def close(self) -> None:
        """Every connection closed. Buffered puts were written by the
        commits before their replies; any left were never acknowledged."""
        self._closed = True
        self._db.close()


def create_in(url: str, schema: str | None = None) -> None:
    """Create the tables at ``url`` (``starlingpy store init``); StoreError if unreachable."""
    connections = _Connections(libpq_url(url), 1, schema)
    try:
        connections.run_now(create_schema, schema)
    finally:
        connections.close()


# -- the SQL, run in worker threads --------------------------------------------


def create_schema(conn, schema: str | None) -> None:
    """Make the tables if missing (idempotent; safe with servers starting together)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
        if schema:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(SCHEMA_SQL)


def _notify(conn, channel: str, identity: str, counts: Mapping[bytes, int]) -> None:
    for name, count in counts.items():
        conn.execute("SELECT pg_notify(%s, %s)", (channel, f"{identity} {name.hex()} {count}"))


def _insert_round(conn, entries: list, limits_of: Callable, identity: str, channel: str):
    """One transaction for a round of puts; whether each entry was kept.
    The other servers hear how many items each queue gained."""
    stored = [True] * len(entries)
    totals: dict[bytes, list[int]] = {}  # name -> [total, expired]
    by_queue: dict[bytes, list[int]] = {}
    for index, (name, _, _, expiry, added, _) in enumerate(entries):
        counts = totals.setdefault(name, [0, 0])
        if expiry and expiry <= added:  # already expired: counted, not kept
            counts[0] += 1
            counts[1] += 1
            continue
        by_queue.setdefault(name, []).append(index)
    limited = sorted(name for name, indexes in by_queue.items() if entries[indexes[0]][5])
    with conn.transaction() if limited else nullcontext():
        cur = conn.cursor()
        for name in limited:  # (name order: concurrent rounds lock queue rows alike)
            cur.execute("INSERT INTO starling_queues (name) VALUES (%s) ON CONFLICT DO NOTHING",
                        (name,))
            by_queue[name] = _fit(cur, name, by_queue[name], entries, limits_of(name), stored)
        for name, indexes in by_queue.items():
            totals[name][0] += len(indexes)
        order = sorted(i for indexes in by_queue.values() for i in indexes)
        names = sorted(totals)
        cur.execute(_WRITE_ROUND, {
            "names": names, "server": identity, "channel": channel,
            "totals": [totals[name][0] for name in names],
            "expired": [totals[name][1] for name in names],
            "queue": [entries[i][0] for i in order], "data": [entries[i][1] for i in order],
            "flags": [entries[i][2] for i in order], "expiry": [entries[i][3] for i in order],
            "added": [entries[i][4] for i in order],
            "notes": [f"{identity} {name.hex()} {len(indexes)}"
                      for name, indexes in by_queue.items() if indexes]})
    return stored


# A round of puts in one statement (so, without a limited queue, in one
# round trip that is also its commit): queue rows made, this server's
# counters added to, items appended in the order given, other servers told.
_WRITE_ROUND = """
WITH made AS (
    INSERT INTO starling_queues (name) SELECT unnest(%(names)s::bytea[]) ON CONFLICT DO NOTHING
), counted AS (
    INSERT INTO starling_counters AS c (name, server, total_items, expired_items)
    SELECT name, %(server)s, total, expired
      FROM unnest(%(names)s::bytea[], %(totals)s::bigint[], %(expired)s::bigint[]) AS u(name, total, expired)
    ON CONFLICT (name, server) DO UPDATE SET total_items = c.total_items + excluded.total_items,
        expired_items = c.expired_items + excluded.expired_items
), appended AS (
    INSERT INTO starling_items (slot, queue, data, flags, expiry, added)
    SELECT (SELECT current FROM starling_rotation), queue, data, flags, expiry, added
      FROM unnest(%(queue)s::bytea[], %(data)s::bytea[], %(flags)s::bigint[],
                  %(expiry)s::float8[], %(added)s::float8[]) WITH ORDINALITY
           AS u(queue, data, flags, expiry, added, place)
     ORDER BY place
)
SELECT pg_notify(%(channel)s, note) FROM unnest(%(notes)s::text[]) AS note
"""


def _fit(cur, name: bytes, indexes: list[int], entries: list, limits: QueueLimits,
         stored: list[bool]) -> list[int]:
    """The entries of a limited queue that fit, oldest items discarded first
    where the queue says so; ``stored`` marks the refused ones False."""
    cur.execute("SELECT 1 FROM starling_queues WHERE name = %s FOR UPDATE", (name,))
    count, size = cur.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM starling_items"
                              " WHERE queue = %s AND lease_server IS NULL", (name,)).fetchone()
    kept: list[int] = []
    for index in indexes:
        length = len(entries[index][1])
        if limits.max_items == 0 or (limits.max_bytes is not None and length > limits.max_bytes):
            stored[index] = False
            continue
        while ((limits.max_items is not None and count >= limits.max_items)
               or (limits.max_bytes is not None and size + length > limits.max_bytes)):
            if not limits.discard_old or not count:
                break
            if kept:  # the oldest waiting item is one of this round's
                dropped = kept.pop(0)  # stored, then discarded, as the journal does
                dropped_size = len(entries[dropped][1])
            else:
                row = cur.execute("DELETE FROM starling_items WHERE id = (SELECT id FROM starling_items"
                                  " WHERE queue = %s AND lease_server IS NULL ORDER BY id LIMIT 1"
                                  " FOR UPDATE) RETURNING length(data)", (name,)).fetchone()
                if row is None:
                    break
                dropped_size = row[0]
            count -= 1
            size -= dropped_size
        if ((limits.max_items is not None and count >= limits.max_items)
                or (limits.max_bytes is not None and size + length > limits.max_bytes)):
            stored[index] = False
            continue
        kept.append(index)
        count += 1
        size += length
    return kept


_NEXT = ("(SELECT id FROM starling_items WHERE queue = %s AND lease_server IS NULL"
         " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)")
_CLAIMS = {
    # One statement each, run outside any explicit transaction: one round
    # trip, committed (durable) before the answer comes back.
    "take": "DELETE FROM starling_items WHERE id = " + _NEXT
            + " RETURNING id, data, flags, expiry, added",
    "open": "UPDATE starling_items SET lease_server = %s, lease_conn = %s,"
            " lease_until = now() + make_interval(secs => %s) WHERE id = " + _NEXT
            + " RETURNING id, data, flags, expiry, added",
    "peek": "SELECT id, data, flags, expiry, added FROM starling_items"
            " WHERE queue = %s AND lease_server IS NULL ORDER BY id LIMIT 1",
}


def _count(cur, server: str, counts: list[tuple[bytes, int, int]]) -> None:
    """Add ``(name, total, expired)`` to this server's counters."""
    cur.executemany("INSERT INTO starling_counters AS c (name, server, total_items, expired_items)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (name, server) DO UPDATE SET"
                    " total_items = c.total_items + excluded.total_items,"
                    " expired_items = c.expired_items + excluded.expired_items",
                    [(name, server, total, expired) for name, total, expired in counts])


def _claim(conn, names: list[bytes], how: str, lease: tuple | None, now: float, identity: str):
    """The head item of the first of ``names`` that has one, taken, held
    (``lease``: server, owner, seconds) or only looked at: ``(name, Item)``
    or None. Expired heads met on the way are dropped and counted."""
    statement = _CLAIMS[how]
    for name in names:
        expired = 0
        while (row := conn.execute(statement, (*(lease or ()), name)).fetchone()) is not None:
            if not row[3] or row[3] > now:
                break
            if how != "take":  # an expired head: dropped, as a take would have
                conn.execute("DELETE FROM starling_items WHERE id = %s", (row[0],))
            expired += 1
        if expired:
            _count(conn.cursor(), identity, [(name, 0, expired)])
        if row is not None:
            return name, Item(row[1], row[2], row[3], row[4])
    return None


def _take_many(conn, name: bytes, wanted: int, now: float, identity: str) -> list[Item]:
    """Up to ``wanted`` head items of ``name``, taken in one statement (and
    again for the places of expired ones, which are dropped and counted)."""
    items: list[Item] = []
    expired = 0
    while len(items) < wanted:
        asked = wanted - len(items)
        rows = conn.execute(
            "DELETE FROM starling_items WHERE id IN (SELECT id FROM starling_items"
            " WHERE queue = %s AND lease_server IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING id, data, flags, expiry, added", (name, asked)).fetchall()
        rows.sort()  # RETURNING keeps no order; ids are the queue's order
        for _, data, flags, expiry, added in rows:
            if expiry and expiry <= now:
                expired += 1
            else:
                items.append(Item(data, flags, expiry, added))
        if len(rows) < asked:
            break  # nothing more there (or all held by other claims)
    if expired:
        _count(conn.cursor(), identity, [(name, 0, expired)])
    return items


def _end_leases(conn, identity: str, owner: Owner, names: list[bytes] | None, close: bool,
                channel: str) -> dict[bytes, int]:
    """Close (delete) or abort (unmark) ``owner``'s open items on ``names``
    (None: all of them); items settled, by queue."""
    where = " WHERE lease_server = %s AND lease_conn = %s"
    params: tuple = (identity, owner)
    if names is not None:
        where += " AND queue = ANY(%s)"
        params += (names,)
    head = "DELETE FROM starling_items" if close else _UNLEASE
    with conn.transaction():
        rows = conn.execute(head + where + " RETURNING queue", params).fetchall()
        counts = _count_names(rows)
        if not close:
            _notify(conn, channel, identity, counts)
    return counts


def _count_names(rows) -> dict[bytes, int]:
    counts: dict[bytes, int] = {}
    for (name,) in rows:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _release_identity(conn, identity: str, channel: str) -> int:
    """Every lease held under ``identity`` goes back (a restart)."""
    with conn.transaction():
        rows = conn.execute(_UNLEASE + " WHERE lease_server = %s RETURNING queue",
                            (identity,)).fetchall()
        _notify(conn, channel, identity, _count_names(rows))
    return len(rows)


def _keep_leases(conn, identity: str, lease: float, channel: str) -> dict[bytes, int]:
    """Renew this server's leases; return to their queues the items whose
    lease ran out (their server is gone). Items returned, by queue."""
    with conn.transaction():
        conn.execute("UPDATE starling_items SET lease_until = now() + make_interval(secs => %s)"
                     " WHERE lease_server = %s", (lease, identity))
        rows = conn.execute(_UNLEASE + " WHERE lease_server IS NOT NULL AND lease_until < now()"
                            " RETURNING queue").fetchall()
        counts = _count_names(rows)
        _notify(conn, channel, identity, counts)
    return counts


def _vacuum_if_dead(conn, threshold: int, rotate_bytes: int = ROTATE_BYTES) -> int:
    """Tidy the items table if no other server is at it: VACUUM once it has
    ``threshold`` dead rows or more, and rotate its partitions (see
    :func:`_rotate`). The dead rows found (0: not vacuumed)."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (_VACUUM_LOCK,)).fetchone()[0]:
        return 0
    try:
        _rotate(conn, rotate_bytes)
        dead = conn.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables"
                            " WHERE relid IN ('starling_items_0'::regclass,"
                            " 'starling_items_1'::regclass)").fetchone()[0]
        if dead < threshold:
            return 0
        conn.execute("VACUUM starling_items")
        return dead
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_VACUUM_LOCK,))


def _rotate(conn, rotate_bytes: int) -> None:
    """TRUNCATE the partition sets no longer go to once nothing is left in
    it; switch sets to it once the current one is over ``rotate_bytes``."""
    current = conn.execute("SELECT current FROM starling_rotation").fetchone()[0]
    other = f"starling_items_{1 - current}"
    emptied = False
    try:
        with conn.transaction():
            # Never queue behind a long transaction that read it: our lock
            # would hold up every claim. Try again at the next round instead.
            conn.execute("SET LOCAL lock_timeout = '100ms'")
            size = conn.execute("SELECT pg_relation_size(%s)", (other,)).fetchone()[0]
            if size == 0:
                emptied = True
            else:
                conn.execute(f"LOCK TABLE {other} IN ACCESS EXCLUSIVE MODE")
                if not conn.execute(f"SELECT EXISTS (SELECT 1 FROM {other})").fetchone()[0]:
                    conn.execute(f"TRUNCATE {other}")
                    emptied = True
    except _lock_timeout():
        return
    if emptied and conn.execute("SELECT pg_relation_size(%s)",
                                (f"starling_items_{current}",)).fetchone()[0] > rotate_bytes:
        conn.execute("UPDATE starling_rotation SET current = %s", (1 - current,))


def _lock_timeout():
    import psycopg.errors

    return psycopg.errors.LockNotAvailable


def _any_ready(conn, names: list[bytes]) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM starling_items WHERE queue = ANY(%s)"
                        " AND lease_server IS NULL)", (names,)).fetchone()[0]


def _delete_queue(conn, name: bytes) -> bool:
    with conn.transaction():
        conn.execute("DELETE FROM starling_items WHERE queue = %s", (name,))
        conn.execute("DELETE FROM starling_counters WHERE name = %s", (name,))
        return conn.execute("DELETE FROM starling_queues WHERE name = %s", (name,)).rowcount > 0


def _flush_queues(conn, names: list[bytes] | None) -> None:
    if names is None:
        conn.execute("DELETE FROM starling_items WHERE lease_server IS NULL")
    else:
        conn.execute("DELETE FROM starling_items WHERE queue = ANY(%s) AND lease_server IS NULL",
                     (names,))


def _statistics(conn) -> list[tuple]:
    rows = conn.execute(
        "SELECT q.name, coalesce(c.total, 0), coalesce(c.expired, 0), coalesce(i.ready, 0),"
        " coalesce(i.size, 0), coalesce(i.held, 0) FROM starling_queues q"
        " LEFT JOIN (SELECT name, sum(total_items) AS total, sum(expired_items) AS expired"
        "            FROM starling_counters GROUP BY name) c ON c.name = q.name"
        " LEFT JOIN (SELECT queue, count(*) FILTER (WHERE lease_server IS NULL) AS ready,"
        "            sum(length(data)) FILTER (WHERE lease_server IS NULL) AS size,"
        "            count(*) FILTER (WHERE lease_server IS NOT NULL) AS held"
        "            FROM starling_items GROUP BY queue) i ON i.queue = q.name"
        " ORDER BY q.name").fetchall()
    return [(name, *map(int, counts)) for name, *counts in rows]
