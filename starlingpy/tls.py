"""TLS for the listener: the server context (reloadable), the handshake with
its deadline, and a small transport that lets the one connection loop in
:mod:`starlingpy.tcp` run over TLS unchanged.

The loop talks to a non-blocking socket: ``recv`` (``b""`` at end of file,
BlockingIOError when nothing is there), ``send`` (how much was taken,
BlockingIOError when nothing could be), ``fileno`` for trio's waits.
:class:`TlsStream` offers exactly that over an ``ssl.SSLObject`` and two
memory BIOs, with two rules that keep the loop's reasoning true:

- ``recv`` decrypts until it has the size asked for or the raw socket would
  block, so a short read still means "wait for the socket": no decrypted
  bytes are ever left behind in OpenSSL's buffer while the loop sleeps
  (the ``pending()`` trap of a non-blocking SSLSocket).
- ``send`` reports the last byte it encrypted as not sent while any of its
  ciphertext is still waiting for the socket, so the loop keeps calling
  (and waiting for writability) until every byte is on the wire.  The next
  call starts with that byte, already encrypted: it is counted once the
  ciphertext is out.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import trio

log = logging.getLogger("starlingpy.tls")

HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish its handshake
RAW_RECV = 65536
MAX_WRITE = 256 * 1024  # plaintext encrypted per send call, bounding our buffer


class TlsConfigError(Exception):
    """A certificate, key or CA file could not be loaded; names the file."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None  # set: clients must present a certificate it signed

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as error:
            raise TlsConfigError(f"cannot load TLS certificate {self.cert} / key {self.key}: {error}") from None
        if self.ca is not None:
            try:
                context.load_verify_locations(cafile=self.ca)
            except (OSError, ssl.SSLError) as error:
                raise TlsConfigError(f"cannot load TLS CA file {self.ca}: {error}") from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class TlsListener:
    """What the server needs for TLS: the context in force, reloaded on
    SIGHUP (connections already open keep theirs), and the handshake."""

    def __init__(self, files: TlsFiles, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.files = files
        self.handshake_timeout = handshake_timeout
        self.context = files.server_context()

    def reload(self) -> bool:
        try:
            self.context = self.files.server_context()
        except TlsConfigError as error:
            log.error("TLS certificates not reloaded, the previous ones stay in force: %s", error)
            return False
        log.info("TLS certificates reloaded from %s", self.files.cert)
        return True

    async def accept(self, sock: socket.socket, peer: str, gate=None) -> TlsStream | None:
        """The TLS stream once the handshake is done; None (logged) when it
        failed or did not finish in time.  A client certificate whose common
        name is a user in the auth file logs that user in on ``gate``."""
        stream = TlsStream(sock, self.context)
        with trio.move_on_after(self.handshake_timeout):
            try:
                await stream.handshake()
            except (OSError, EOFError) as error:  # ssl.SSLError and resets are OSErrors
                log.warning("%s: TLS handshake failed: %s", peer, _reason(error))
                stream.flush_alert()
                return None
            if gate is not None:
                gate.login_by_certificate(stream.common_name())
            return stream
        log.warning("%s: TLS handshake timed out after %g s", peer, self.handshake_timeout)
        return None


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return f"{error.reason} ({error.verify_message})" if getattr(error, "verify_message", None) \
            else error.reason
    return str(error) or type(error).__name__


class TlsStream:
    """A non-blocking TLS connection with the socket calls the loop uses."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._unsent = memoryview(b"")  # ciphertext the socket has not taken yet
        self._held = 0  # plaintext bytes encrypted but not yet reported as sent
        self._eof = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def common_name(self) -> str | None:
        """The verified client certificate's common name, if one was given."""
        cert = self._tls.getpeercert()
        for rdn in (cert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return value
        return None

    async def handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush_all()
                if self._eof:
                    raise EOFError("connection closed during the handshake") from None
                await trio.lowlevel.wait_readable(self._sock)
                self._receive_raw()
        await self._flush_all()  # the server's last flight (and TLS 1.3 tickets)

    def flush_alert(self) -> None:
        """Best effort: send the alert that explains a failed handshake."""
        try:
            self._flush()
        except OSError:
            pass

    def recv(self, size: int) -> bytes:
        chunks = []
        wanted = size
        drained = False  # the socket gave less than asked: asking again would only fail
        while wanted > 0:
            if not self._incoming.pending and not self._tls.pending():
                # Nothing for OpenSSL to work on: read the socket first
                # (cheaper than letting read() fail with SSLWantReadError).
                if self._eof or (chunks and drained):
                    break
                received = self._receive_raw()
                if not received:
                    break
                drained = received < RAW_RECV
            try:
                data = self._tls.read(wanted)
            except ssl.SSLWantReadError:  # only part of a record is here
                if self._eof:
                    break
                received = self._receive_raw()
                if not received:
                    break
                drained = received < RAW_RECV
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True
                break
            except ssl.SSLError as error:
                raise ConnectionAbortedError(f"TLS error: {_reason(error)}") from None
            if not data:
                self._eof = True
                break
            chunks.append(data)
            wanted -= len(data)
        if self._outgoing.pending:  # reading can produce records (a key update)
            self._flush()
        if chunks:
            return b"".join(chunks)
        if self._eof:
            return b""
        raise BlockingIOError

    def send(self, data) -> int:
        if self._held:
            if not self._flush():
                raise BlockingIOError
            held, self._held = self._held, 0
            return held
        if not self._flush():
            raise BlockingIOError
        try:
            written = self._tls.write(memoryview(data)[:MAX_WRITE])
        except ssl.SSLError as error:
            raise ConnectionAbortedError(f"TLS error: {_reason(error)}") from None
        if self._flush():
            return written
        self._held = 1
        return written - 1

    def _receive_raw(self) -> int:
        """Move what the socket has into OpenSSL: how many bytes (0 when it
        had nothing; end of file counts as 1, so the caller reads on)."""
        try:
            raw = self._sock.recv(RAW_RECV)
        except BlockingIOError:
            return 0
        if raw:
            self._incoming.write(raw)
            return len(raw)
        self._incoming.write_eof()
        self._eof = True
        return 1

    def _flush(self) -> bool:
        """Send what ciphertext the socket takes now; True once none is left."""
        while True:
            if not self._unsent:
                if not self._outgoing.pending:
                    return True
                self._unsent = memoryview(self._outgoing.read())
            try:
                sent = self._sock.send(self._unsent)
            except BlockingIOError:
                return False
            self._unsent = self._unsent[sent:]

    async def _flush_all(self) -> None:
        while not self._flush():
            await trio.lowlevel.wait_writable(self._sock)
