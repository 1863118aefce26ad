"""One TCP connection to one server, over pymemcache's base ``Client``.

This module is the only place that talks to pymemcache. It turns its
exceptions into two kinds: :class:`ConnectionFailed` (the transport broke or
timed out; the caller marks the server dead) and :class:`ServerError` (the
server answered with an error; the connection itself was fine).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from pymemcache.client.base import Client as MemcacheClient
from pymemcache.exceptions import (
    MemcacheError,
    MemcacheIllegalInputError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownError,
)

from .capabilities import Capabilities, detect
from .errors import InvalidQueueName, ServerError
from .queue_stats import request_stats
from .security import AuthenticationFailed, Credentials, log_in


class ConnectionFailed(Exception):
    """The transport to ``address`` failed (refused, reset, closed, timed out).

    ``request_sent`` is False only when the failure happened before the
    request left the client (connecting, capability detection): only then
    is it safe to send the same request elsewhere as if nothing happened.
    """

    def __init__(self, address: str, cause: BaseException, *, request_sent: bool) -> None:
        super().__init__(f"{address}: {type(cause).__name__}: {cause}")
        self.address = address
        self.request_sent = request_sent


class _PassThroughSerde:
    """Hands our own (data, flags) through pymemcache untouched: the client's
    serializers run above this layer so that a get can report its flags."""

    def serialize(self, key: bytes, value: bytes) -> tuple[bytes, int]:
        return value, 0  # the real flags are passed to set() explicitly

    def deserialize(self, key: bytes, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


class Connection:
    """A lazily opened connection with the server's capabilities.

    Not thread-safe: a :class:`~starlingpy.client.servers.Server` pool hands
    each connection to one thread at a time.
    """

    def __init__(self, address: str, host: str, port: int, *, connect_timeout: float,
                 timeout: float, credentials: Credentials | None = None) -> None:
        self.address = address
        self._timeout = timeout
        self._credentials = credentials
        # default_noreply=False: a set must be acknowledged with STORED, because
        # only then is the item in the server's journal; a fire-and-forget set
        # could be dropped (queue full, server dying) without anyone knowing.
        self._mc = MemcacheClient((host, port), serde=_PassThroughSerde(),
                                  connect_timeout=connect_timeout, timeout=timeout,
                                  no_delay=True, default_noreply=False,
                                  tls_context=credentials.tls if credentials else None)
        self.capabilities: Capabilities | None = None

    # -- opening ---------------------------------------------------------

    def open(self) -> Capabilities:
        """Connect if needed and return the server's capabilities.

        Capabilities are detected with one ``version`` per TCP connection, not
        per call. A pooled connection the server has closed meanwhile (it
        restarted) is noticed here and replaced before any request is sent.
        """
        if self._mc.sock is not None and self._peer_closed():
            self.close()
        if self._mc.sock is None or self.capabilities is None:
            self.capabilities = None
            with self._translate(request_sent=False):
                version = self._version()
            self.capabilities = detect(version.decode("utf-8", "replace"))
        return self.capabilities

    def _version(self) -> bytes:
        """``version`` on a fresh connection, logging in first if the server asks."""
        if self._mc.sock is None:
            self._mc._connect()  # pymemcache's connect (TLS included); it has no public one
        try:
            return log_in(self._mc.sock, self._credentials)
        except AuthenticationFailed:
            self.close()
            raise

    def _peer_closed(self) -> bool:
        """True when the idle socket has seen EOF or holds unexpected bytes."""
        sock = self._mc.sock
        # Non-blocking for this one look: a socket with a timeout would wait
        # for readability first, whatever MSG_DONTWAIT says.
        previous = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            # The plain socket's recv, also under TLS: a peek at the raw stream.
            socket.socket.recv(sock, 1, socket.MSG_PEEK)
        except BlockingIOError:
            return False  # nothing to read: still open
        except OSError:
            return True
        finally:
            sock.settimeout(previous)
        # b"" is EOF; a byte would be a reply nobody asked for (out of step).
        return True

    def is_open(self) -> bool:
        """Whether the connection is still up (an idle one: a look, no request)."""
        return self._mc.sock is not None and not self._peer_closed()

    def close(self) -> None:
        """Close the socket; the server aborts any item this connection holds open."""
        self._mc.close()
        self.capabilities = None

    # -- requests --------------------------------------------------------

    def store(self, key: bytes, data: bytes, flags: int, expiry: int) -> bool:
        """``set``; True for STORED, False for NOT_STORED."""
        with self._translate(request_sent=True):
            return bool(self._mc.set(key, data, expire=expiry, noreply=False, flags=flags))

    def fetch(self, key: bytes, wait: float = 0.0) -> tuple[bytes, int] | None:
        """``get <key>``: (data, flags) or None for ``END``.

        The socket read timeout is raised to ``wait`` + the normal timeout for
        this one request, so a server-side ``/t=`` wait ends before ours.
        """
        with self._translate(request_sent=True), self._read_timeout(self._timeout + wait):
            return self._mc.get(key)

    def delete(self, key: bytes) -> bool:
        """``delete <queue>``; True for DELETED, False for NOT_FOUND."""
        with self._translate(request_sent=True):
            return bool(self._mc.delete(key, noreply=False))

    def command(self, line: bytes) -> bytes:
        """Send one command line, return its one-line reply (errors raise)."""
        with self._translate(request_sent=True):
            return self._mc.raw_command(line)

    def stats(self) -> dict[str, str]:
        """``stats`` as ``{name: value}``, both text, values verbatim."""
        with self._translate(request_sent=True):
            try:
                return request_stats(self._mc.sock)
            except BaseException as exc:
                self._mc.close()  # mid-reply: the stream is out of step
                if isinstance(exc, ServerError):  # an error reply, translated like any other
                    raise MemcacheServerError(str(exc)) from exc
                raise

    # -- plumbing --------------------------------------------------------

    @contextmanager
    def _read_timeout(self, seconds: float) -> Iterator[None]:
        if seconds == self._timeout:  # a get that does not wait: nothing to change
            yield
            return
        mc = self._mc
        mc.timeout = seconds  # used if pymemcache has to reconnect
        if mc.sock is not None:
            mc.sock.settimeout(seconds)
        try:
            yield
        finally:
            mc.timeout = self._timeout
            if mc.sock is not None:
                mc.sock.settimeout(self._timeout)

    @contextmanager
    def _translate(self, *, request_sent: bool) -> Iterator[None]:
        try:
            yield
        except MemcacheIllegalInputError as exc:
            raise InvalidQueueName(str(exc)) from exc
        except (OSError, MemcacheUnexpectedCloseError, MemcacheUnknownError,
                KeyError, ValueError) as exc:
            # Timeouts are OSErrors; an unknown reply (pymemcache raises KeyError
            # or ValueError for a VALUE line it cannot match) means the stream
            # is out of step. Either way this connection is finished.
            self.close()
            raise ConnectionFailed(self.address, exc, request_sent=request_sent) from exc
        except MemcacheError as exc:
            # ERROR / CLIENT_ERROR / SERVER_ERROR: the server is alive and said no.
            # pymemcache closes the socket after any error; forget the caps with it.
            if self._mc.sock is None:
                self.capabilities = None
            raise ServerError(f"{self.address}: {exc}") from exc
