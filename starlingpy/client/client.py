"""The Client facade: what a web view or a worker calls."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

from starlingpy import DEFAULT_ADDRESS

from .connection import ConnectionFailed
from .errors import ClientError, NotStored, ServerError, ServerUnavailable, UnsupportedFeature
from .keys import build_set_key, check_queue_name, check_set_options, queue_list
from .message import Message
from .queue_stats import queue_sizes
from .reading import Reader, Taken
from .security import Credentials
from .serialization import JSONSerializer, Serializer
from .servers import ServerPool


class Client:
    """A thread-safe client for one or several starlingpy (or Starling) servers.

    ``Client(servers=["127.0.0.1:22122"], serializer=None, connect_timeout=2.0,
    timeout=5.0, set_retries=3, dead_retry=5.0)``

    Thread safety: one ``Client`` may be shared by every thread of a web
    server. Each server keeps a pool of connections; a call checks one out
    for its duration (a reliable read for the length of its ``with`` block),
    so no connection is ever used by two threads at once.

    Servers: ``set`` goes to the next live server in rotation; ``get`` asks
    every live server, starting at a rotating one so none starves;
    ``delete`` and ``flush`` go to all. A server that fails is skipped for
    ``dead_retry`` seconds, then tried again. A ``set`` that fails on one
    server is retried on the next, up to ``set_retries`` more times, then
    raises :class:`ServerUnavailable`: a message is never dropped silently.
    A ``get`` is never re-sent after its request went out (see
    :mod:`starlingpy.client.reading` for why).

    Timeouts: ``connect_timeout`` bounds connecting, ``timeout`` every read;
    a blocking get's socket waits its own ``timeout`` plus ``timeout`` so
    the server-side wait always ends first.

    Security: ``username``/``password`` log in on every new connection
    (also after a reconnect) when the server asks for it; ``tls`` (an
    ``ssl.SSLContext``) wraps every connection.  When none of the three is
    given they are read from the environment (``STARLINGPY_CREDENTIALS``
    and friends, see :mod:`starlingpy.client.security`), so a whole tier is
    configured without a password on any command line.

    Servers without starlingpy's extensions (detected once per connection
    from ``version``): blocking and priority gets fall back to polling in
    priority order; reliable reads, ``peek`` and ``flush`` raise
    :class:`UnsupportedFeature`.
    """

    def __init__(self, servers: str | Sequence[str] = (DEFAULT_ADDRESS,),
                 serializer: Serializer | None = None, connect_timeout: float = 2.0,
                 timeout: float = 5.0, set_retries: int = 3, dead_retry: float = 5.0,
                 username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        addresses = [servers] if isinstance(servers, str) else list(servers)
        if set_retries < 0:
            raise ValueError("set_retries must be >= 0")
        self.serializer = serializer if serializer is not None else JSONSerializer()
        self.set_retries = set_retries
        if username is None and password is None and tls is None:
            credentials = Credentials.from_environment()
        else:
            credentials = Credentials(username, password, tls)
        self._pool = ServerPool(addresses, connect_timeout=connect_timeout, timeout=timeout,
                                dead_retry=dead_retry, credentials=credentials)
        self._reader = Reader(self._pool)

    @property
    def servers(self) -> list[str]:
        """The configured ``host:port`` addresses."""
        return [server.address for server in self._pool.servers]

    # -- writing ---------------------------------------------------------

    def set(self, queue: str, value: object, expiry: int = 0, *,
            delay: float | timedelta | None = None, unique: str | None = None) -> bool:
        """Enqueue ``value`` on ``queue``; returns True once a server said STORED.

        ``delay`` (seconds or a timedelta): no reader sees the item until
        then, kept across server restarts. ``unique`` (1-200 characters of
        ``[A-Za-z0-9_.:-]``): while an item with that id is in the queue
        (waiting, delayed or being processed), the set stores nothing and
        returns False. The server answers both cases, and a full queue, with
        the same ``NOT_STORED``, so with ``unique`` a full queue also returns
        False. With several servers, a unique id always goes to the same
        one (chosen by the id), so two sets of it meet there; only when that
        server is down does the set go to the next one.

        Raises :class:`NotStored` when the queue is full (without
        ``unique``), :class:`UnsupportedFeature` when ``delay`` or
        ``unique`` is asked of a server without them (Ruby Starling or
        memcached would take ``q/delay=...`` for a queue name), and
        :class:`ServerUnavailable` when no server stored it within ``1 +
        set_retries`` attempts. A set whose reply was lost (the server died
        or timed out after reading it) is retried elsewhere, so in that rare
        case the message can be stored twice: at least once, never zero.
        """
        if not isinstance(expiry, int) or isinstance(expiry, bool):
            raise TypeError(f"expiry must be an int (seconds), got {expiry!r}")
        seconds = check_set_options(delay, unique)
        held = bool(seconds) or unique is not None
        key = build_set_key(queue, delay=seconds, unique=unique)
        data, flags = self.serializer.dumps(value)
        last_error: Exception | None = None
        for _ in range(1 + self.set_retries):
            servers = self._pool.live() if unique is None else self._pool.live_for(unique)
            if not servers:
                break
            server = servers[0]
            try:
                with server.connection() as conn:
                    if held:
                        _require_held_items(conn)
                    stored = conn.store(key, data, flags, expiry)
            except ConnectionFailed as exc:
                last_error = exc
                continue
            except ServerError as exc:
                if held and "bad queue name" in str(exc):  # a starlingpy from before the options
                    raise UnsupportedFeature(f"server {server.address} does not support set "
                                             f"options (delay, unique): {exc}") from None
                raise
            if not stored:
                if unique is not None:
                    return False
                raise NotStored(f"queue {queue!r} on {server.address} is full")
            return True
        raise ServerUnavailable(f"set on {queue!r} failed on every server tried: {last_error}")

    # -- reading ---------------------------------------------------------

    def get(self, queue: str, timeout: float | None = None) -> object:
        """The next value of ``queue``, or None. With ``timeout`` (seconds),
        wait up to that long for one to arrive."""
        message = self.get_first([queue], timeout)
        return None if message is None else message.value

    def get_first(self, queues: Sequence[str], timeout: float | None = None) -> Message | None:
        """The next item of the first non-empty queue of ``queues`` (strict
        priority order), or None after ``timeout`` seconds (None: don't wait)."""
        taken = self._reader.take(queue_list(queues), timeout, reliable=False)
        return None if taken is None else self._message(taken)

    def peek(self, queue: str) -> object:
        """The head value of ``queue`` without removing it, or None."""
        taken = self._reader.peek(check_queue_name(queue))
        return None if taken is None else self._message(taken).value

    @contextmanager
    def reliable(self, queues: str | Sequence[str],
                 timeout: float | None = None) -> Iterator[Message | None]:
        """Reliable read: ``with client.reliable(["urgent", "normal"], 5) as msg:``.

        ``msg`` is a :class:`Message`, or None if nothing arrived in time.
        Leaving the block normally confirms the item (``/close``: gone for
        good); an exception aborts it (``/abort``: back at the head of its
        queue) and propagates. If the process dies inside the block, the
        server puts the item back when the connection drops. So every item
        is processed at least once. Raises :class:`ConfirmFailed` if the
        confirmation cannot reach the server (the item will come again),
        :class:`UnsupportedFeature` on a server without ``/open``.
        """
        taken = self._reader.take(queue_list(queues), timeout, reliable=True)
        if taken is None:
            yield None
            return
        try:
            message = self._message(taken)  # a custom serializer may raise
            yield message
        except BaseException:
            self._reader.abort(taken)
            raise
        self._reader.confirm(taken)

    @contextmanager
    def hold(self, queue: str, timeout: float | None = None) -> Iterator[Callable[[], bool] | None]:
        """Hold the next item of ``queue`` open as a lease: ``with
        client.hold("lock", 5) as lease:`` (None if nothing came in time).
        ``lease()`` tells whether it still holds (its connection is up).
        The item goes back to the head of its queue when the block ends, or
        when this process dies (the server sees the connection drop), so
        whoever waits for it next gets it: a lock with fail-over."""
        taken = self._reader.take([check_queue_name(queue)], timeout, reliable=True)
        if taken is None:
            yield None
            return
        try:
            yield taken.connection.is_open
        finally:
            self._reader.abort(taken)

    def _message(self, taken: Taken) -> Message:
        return Message(queue=taken.queue, value=self.serializer.loads(taken.data, taken.flags),
                       flags=taken.flags, server=taken.server.address, raw=taken.data)

    # -- administration --------------------------------------------------

    def stats(self) -> dict[str, dict[str, str]]:
        """``{"host:port": {stat: value}}`` for every server that answered.
        Raises ServerUnavailable if none did."""
        result: dict[str, dict[str, str]] = {}
        for server in self._pool.live():
            try:
                with server.connection() as conn:
                    result[server.address] = conn.stats()
            except ConnectionFailed:
                continue
        if not result:
            raise ServerUnavailable("no server answered stats")
        return {address: result[address] for address in self.servers if address in result}

    def sizeof(self, queue: str | None = None) -> int | dict[str, int]:
        """Items waiting in ``queue`` over all servers that answered; without
        a queue, ``{queue: items}`` for every queue. A dead server's items
        are not counted."""
        sizes = queue_sizes(self.stats().values())
        if queue is None:
            return sizes
        return sizes.get(check_queue_name(queue), 0)

    def available_queues(self) -> list[str]:
        """Sorted names of every queue any answering server has."""
        return sorted(queue_sizes(self.stats().values()))

    def delete(self, queue: str) -> None:
        """Drop ``queue`` (items and files) on every server. Raises
        ServerUnavailable, after trying the others, if any server missed it."""
        key = check_queue_name(queue).encode("utf-8")
        self._on_all_servers(f"delete {queue}", lambda conn: conn.delete(key))

    def supports_set_options(self) -> bool:
        """Whether every live server takes ``set(..., delay=, unique=)``."""
        supported = True
        for server in self._pool.live():
            try:
                with server.connection() as conn:
                    supported = supported and conn.capabilities.held_items
            except ConnectionFailed:
                continue
        return supported

    def flush(self, queue: str) -> None:
        """Empty ``queue`` on every server, keeping it. Raises
        UnsupportedFeature on a server without ``flush``."""
        line = b"flush " + check_queue_name(queue).encode("utf-8")

        def flush_one(conn):
            caps = conn.capabilities
            if not caps.flush:
                raise UnsupportedFeature(f"server {conn.address} (version {caps.version!r}) "
                                         "does not support flush")
            conn.command(line)

        self._on_all_servers(f"flush {queue}", flush_one)

    def _on_all_servers(self, what: str, action) -> None:
        missed: list[str] = []
        first_error: ClientError | None = None
        for server in self._pool.servers:
            if not server.is_alive():
                missed.append(server.address)
                continue
            try:
                with server.connection() as conn:
                    action(conn)
            except ConnectionFailed:
                missed.append(server.address)
            except ClientError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        if missed:
            raise ServerUnavailable(f"{what} did not reach {', '.join(missed)}")

    # -- lifetime --------------------------------------------------------

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(servers={self.servers!r})"


def _require_held_items(conn) -> None:
    caps = conn.capabilities
    if not caps.held_items:
        raise UnsupportedFeature(f"server {conn.address} (version {caps.version!r}) does not "
                                 "support delayed or unique items")
