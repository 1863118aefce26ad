"""The server list: addresses, a connection pool per server, and health.

A server that fails (refused, reset, timed out) is marked dead and skipped
until ``dead_retry`` seconds have passed; then the next call tries it again,
and a server that answers is simply alive again (it "rejoins").

Fork safety: a child process that inherits a client never uses its
parent's connections; it opens its own on first use.

Thread safety: each :class:`Server` keeps a pool of connections
(pymemcache's thread-safe ``ObjectPool``); a thread checks one out for the
length of a request (or of a reliable read's block) and gives it back, so
no connection is ever used by two threads at once. Health and the rotation
counter are guarded by locks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pymemcache.pool import ObjectPool

from .connection import Connection, ConnectionFailed
from .security import Credentials

log = logging.getLogger(__name__)


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) to ``(host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"server address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


class Server:
    """One server: where it is, its idle connections, and whether it is dead."""

    def __init__(self, address: str, *, connect_timeout: float, timeout: float,
                 dead_retry: float, credentials: Credentials | None = None) -> None:
        self.address = address
        self._credentials = credentials
        self.host, self.port = parse_address(address)
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._dead_retry = dead_retry
        self._dead_until = 0.0
        self._closed = False
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._pool: ObjectPool[Connection] = self._new_pool()

    def _new_pool(self) -> ObjectPool[Connection]:
        return ObjectPool(self._new_connection, after_remove=Connection.close)

    def _new_connection(self) -> Connection:
        return Connection(self.address, self.host, self.port,
                          connect_timeout=self._connect_timeout, timeout=self._timeout,
                          credentials=self._credentials)

    # -- health ----------------------------------------------------------

    def is_alive(self, now: float | None = None) -> bool:
        """False while the server is in its back-off after a failure."""
        with self._lock:
            return (time.monotonic() if now is None else now) >= self._dead_until

    def mark_dead(self, reason: object) -> None:
        """Skip this server for ``dead_retry`` seconds."""
        with self._lock:
            self._dead_until = time.monotonic() + self._dead_retry
        log.warning("server %s marked dead for %.1fs: %s", self.address, self._dead_retry, reason)

    # -- connections -----------------------------------------------------

    def checkout(self) -> Connection:
        """A connection for this thread alone; give it back with :meth:`checkin`."""
        if os.getpid() != self._pid:
            # A forked child must not talk on its parent's sockets: the two
            # processes' requests and replies would interleave on one stream.
            # Start a fresh pool; the inherited one is dropped unused.
            with self._lock:
                if os.getpid() != self._pid:
                    self._pid = os.getpid()
                    self._pool = self._new_pool()
        return self._pool.get()

    def checkin(self, conn: Connection, *, reusable: bool = True) -> None:
        """Return ``conn`` to the pool, or close it (``reusable=False``)."""
        if reusable and not self._closed:
            self._pool.release(conn)
        else:
            self._pool.destroy(conn)
            conn.close()  # also when close() already dropped it from the pool

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Check a connection out for one request, opened (its
        ``capabilities`` known); on a transport failure the server is marked
        dead, the connection closed and the error re-raised."""
        conn = self.checkout()
        try:
            conn.open()
            yield conn
        except ConnectionFailed as exc:
            self.checkin(conn, reusable=False)
            self.mark_dead(exc)
            raise
        except BaseException:
            self.checkin(conn, reusable=False)
            raise
        self.checkin(conn)

    def close(self) -> None:
        """Close every idle connection (checked-out ones close on checkin)."""
        self._closed = True
        self._pool.clear()


class ServerPool:
    """All servers, handed out live-only in a rotating order."""

    def __init__(self, addresses: Sequence[str], *, connect_timeout: float, timeout: float,
                 dead_retry: float, credentials: Credentials | None = None) -> None:
        if not addresses:
            raise ValueError("at least one server address is needed")
        self.servers = [Server(a, connect_timeout=connect_timeout, timeout=timeout,
                               dead_retry=dead_retry, credentials=credentials) for a in addresses]
        self._next = 0
        self._lock = threading.Lock()

    def rotated(self) -> list[Server]:
        """Every server, starting one further along on each call, so that
        no server starves behind another that always has items."""
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.servers)
        return self.servers[start:] + self.servers[:start]

    def live(self) -> list[Server]:
        """The servers not in back-off, in rotated order."""
        now = time.monotonic()
        return [server for server in self.rotated() if server.is_alive(now)]

    def live_for(self, key: str) -> list[Server]:
        """The servers not in back-off, starting at the one ``key`` belongs
        to (the same for every client with the same server list)."""
        start = zlib.crc32(key.encode("utf-8")) % len(self.servers)
        now = time.monotonic()
        ordered = self.servers[start:] + self.servers[:start]
        return [server for server in ordered if server.is_alive(now)]

    def close(self) -> None:
        for server in self.servers:
            server.close()
