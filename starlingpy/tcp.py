"""The TCP shell: accept, and each connection's task.

Receive bytes, feed the parser, dispatch, send replies, close.  Shaped after
trio's ``serve_tcp``/``serve_listeners`` (``task_status`` hands tests the
bound address; only the accept errors that mean "overloaded" are retried).

Plain connections (no TLS, no idle timeout) are served in passes
(:mod:`starlingpy.passes`): their task stays parked while one task serves
every ready connection per wake-up, and does here only what must wait (a
Pending, a partial send, end of file).  Other connections run the loop of
:meth:`QueueServer._converse` in their own task: stdlib sockets in
non-blocking mode, ``trio.lowlevel.wait_readable``/``wait_writable`` only
when a call would block, and an explicit checkpoint after a few batches
read without waiting, so one busy client cannot starve the others.

With TLS (``tls``), each connection's handshake runs first, then this same
loop runs over a :class:`starlingpy.tls.TlsStream`, which offers the
socket calls it uses; the plain path is unchanged.

Error handling: a ProtocolError is answered and the connection lives on (or
is closed when the error says so).  A StoreError from a command is its
reply; one from making a batch durable is sent instead of the batch's
replies, and ends that connection.  Any other exception inside one connection
is a bug: it is logged with its traceback, answered ``SERVER_ERROR``, and
ends only that connection.  Connection resets end the connection quietly.

Resource handling: every reply batch is preceded by ``store.commit()``
(and by awaiting what it returns, if anything: under sync ``always`` the
fsync), so a client never reads a reply before its record was written.
Any command may answer with a ``Pending``: the replies before it are sent,
then it is awaited.  A connection's open items go back to their queues when
it closes.  The shell knows storage only through the ``Store`` interface.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

import trio

from starlingpy import passes
from starlingpy.auth import peer_name
from starlingpy.counters import ServerCounters
from starlingpy.passes import CLOSE, PENDING, RECV_SIZE, Passes, answer_ready, send_now
from starlingpy.protocol import Parser, ProtocolError
from starlingpy.session import ServerControl, Session
from starlingpy.store import Pending, Store, StoreError

log = logging.getLogger("starlingpy.server")

# At most this many received batches (each up to RECV_SIZE) in a row before
# the connection yields to the others.
MAX_BATCHES_WITHOUT_YIELD = 4
# Shutdown: how long in-flight connections get to finish before being cut.
SHUTDOWN_GRACE = 10.0
_OVERLOAD_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class ListenError(Exception):
    """The listening socket could not be bound."""


class QueueServer:
    """Serves one Store on one listening socket."""

    def __init__(self, store: Store, *, max_connections: int = 4096,
                 max_line: int = 2048, max_item_size: int = 16 * 1024 * 1024,
                 idle_timeout: float = 0.0,
                 enable_shutdown: bool = False, flush_all_empties: bool = False,
                 auth=None, tls=None) -> None:
        self.store = store
        self.auth = auth  # starlingpy.auth.AuthFile: who may do what
        self.tls = tls  # starlingpy.tls.TlsListener: connections are TLS-only
        self.counters = ServerCounters()
        self.max_connections = max_connections
        self.max_line = max_line
        self.max_item_size = max_item_size
        self.idle_timeout = idle_timeout
        self.control = ServerControl(enable_shutdown=enable_shutdown,
                                     flush_all_empties=flush_all_empties,
                                     limit_maxbytes=max_item_size,
                                     request_shutdown=self.request_shutdown)
        self._accept_scope: trio.CancelScope | None = None
        self._shutdown_requested = False
        self._sockets: set[socket.socket] = set()
        # Plain connections without an idle timeout are served in passes.
        self._passes: Passes | None = None

    def request_shutdown(self) -> None:
        """Stop accepting, cut idle waits short; in-flight commands are answered."""
        self._shutdown_requested = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        self.control.interrupt_all()
        for sock in self._sockets:
            # The reader sees end-of-file once it has answered what it read.
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    async def serve(self, host: str, port: int, *, handle_signals: bool = False,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port until shutdown; ``task_status.started((host, port))``."""
        listener = trio.socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                      socket.SOCK_STREAM)
        with listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                await listener.bind((host, port))
            except OSError as error:
                raise ListenError(f"cannot listen on {host}:{port}: {error.strerror}") from None
            listener.listen(1024)
            bound = listener.getsockname()[:2]
            async with trio.open_nursery() as background:
                await background.start(self.store.run_background)
                if self.tls is None and not self.idle_timeout:
                    self._passes = Passes(self.store, self.counters, self.control)
                    background.start_soon(self._passes.run)
                if handle_signals:
                    background.start_soon(self._watch_signals)
                async with trio.open_nursery() as connections:
                    task_status.started(bound)
                    with trio.CancelScope() as self._accept_scope:
                        if self._shutdown_requested:
                            self._accept_scope.cancel()
                        await self._accept_loop(listener, connections)
                    # Only request_shutdown ends the accept loop; it already
                    # interrupted the waits. Give in-flight work a deadline.
                    connections.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE
                background.cancel_scope.cancel()
            if self._passes is not None:
                self._passes.close()
                self._passes = None
        log.info("server stopped")

    async def _watch_signals(self) -> None:
        import signal

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:  # reread the auth file and certificates
                    for part in (self.auth, self.tls):
                        if part is not None:
                            part.reload()
                    continue
                log.warning("received %s: shutting down", signal.Signals(signum).name)
                self.request_shutdown()

    async def _accept_loop(self, listener, nursery: trio.Nursery) -> None:
        while True:
            try:
                conn, _ = await listener.accept()
            except OSError as error:
                if error.errno in _OVERLOAD_ERRNOS:
                    log.error("accept: %s; retrying in 100 ms", error)
                    await trio.sleep(0.1)
                    continue
                raise
            sock = socket.socket(fileno=conn.detach())
            if self.counters.curr_connections >= self.max_connections:
                self.counters.rejected_connections += 1
                sock.close()
                continue
            self.counters.curr_connections += 1
            self.counters.total_connections += 1
            nursery.start_soon(self._connection, sock)

    async def _connection(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = peer_name(sock) if self.auth or self.tls else ""
        session = Session(self.store, self.counters, self.control,
                          self.auth.gate(peer) if self.auth else None)
        self._sockets.add(sock)
        stream = sock
        try:
            if self.tls is not None:  # the loop below runs over TLS unchanged
                stream = await self.tls.accept(sock, peer, session.gate)
                if stream is None:
                    return
            parser = Parser(max_line=self.max_line, max_item_size=self.max_item_size)
            if self._passes is not None:
                await self._converse_in_passes(sock, session, parser)
            else:
                await self._converse(stream, session, parser)
        except ConnectionError:  # resets and broken pipes end a connection quietly
            pass
        except StoreError as error:
            # The records behind this batch's replies were not written: say
            # so instead of the replies, and end the connection (the client
            # cannot know which of its pipelined commands took effect).
            log.warning("closing a connection: %s", error)
            try:
                stream.send(error.reply + b"\r\n")
            except OSError:
                pass
        except Exception:
            log.exception("unexpected error on a connection; closing it")
            try:
                stream.send(b"SERVER_ERROR internal error\r\n")
            except OSError:
                pass
        finally:
            await self._release(session)
            self.counters.curr_connections -= 1
            self._sockets.discard(sock)
            sock.close()

    async def _converse_in_passes(self, sock: socket.socket, session: Session,
                                  parser: Parser) -> None:
        """Leave the connection to the passes; do here what they hand back."""
        connection = passes.Connection(sock, session, parser)
        park = self._passes.park
        while True:
            handed = await park(connection)
            kind = handed[0]
            if kind is passes.ANSWER:
                if not await self._go_on_answering(sock, session, parser, *handed[1:]):
                    return
            elif kind is passes.SEND:
                await self._send_all(sock, handed[1])
            else:  # end of file, or shutdown
                self._ended(parser)
                return
            if self.control.closing:
                return

    async def _converse(self, sock: socket.socket, session: Session, parser: Parser) -> None:
        """One connection in its own task (TLS, or an idle timeout to keep)."""
        counters = self.counters
        control = self.control
        commit = self.store.commit
        wait_readable = trio.lowlevel.wait_readable
        idle_timeout = self.idle_timeout
        fd = sock.fileno()  # an int spares trio a fileno() call per wait
        busy_batches = 0  # batches read in a row without waiting for the socket
        # A read shorter than RECV_SIZE drained the socket, and a client that
        # waits for its replies sends nothing more until it has them: wait
        # for readability first instead of a recv that would fail (a system
        # call and an exception per round trip).  Waiting on a socket that
        # is already readable just returns, so nothing is ever missed.
        drained = False
        while not session.quit:
            if drained:
                if control.closing:
                    return
                if idle_timeout:
                    if not await self._wait_readable_or_idle(sock):
                        return
                else:
                    await wait_readable(fd)
                busy_batches = 0
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                drained = True
                continue
            if not data:
                self._ended(parser)
                return
            drained = len(data) < RECV_SIZE
            busy_batches += 1
            if busy_batches > MAX_BATCHES_WITHOUT_YIELD:
                # Yield now and then, so a client that never lets us block
                # cannot starve the others; not on every batch (a full
                # scheduler pass costs as much as the batch itself).
                await trio.lowlevel.checkpoint()
                busy_batches = 0
            counters.bytes_read += len(data)
            parser.feed(data)
            out: list[bytes] = []
            reason, pending = answer_ready(parser, session, out)
            if reason is not None:
                if not await self._go_on_answering(sock, session, parser, reason, pending, out):
                    return
            elif out:
                # The common case inline (one reply batch, sent whole at
                # once); _send handles partial sends.
                durable = commit()
                if durable is not None:
                    await durable.wait()
                rest = send_now(sock, out, self.counters)
                if rest:
                    await self._send_all(sock, rest)
            else:
                commit()
            if control.closing:
                return

    async def _go_on_answering(self, sock: socket.socket, session: Session, parser: Parser,
                               reason: str, pending: Pending | None, out: list[bytes]) -> bool:
        """Answering stopped for ``reason`` (see passes.answer_ready): do
        what it needs, answer the rest of the complete commands, send it all.
        False when the connection is to be closed."""
        while reason is not None:
            await self._send(sock, out)  # the replies before, written first
            out = []
            if reason is CLOSE:
                return False
            if reason is PENDING:
                reply = await pending.wait()
                if reply:
                    out.append(reply)
                if session.quit:
                    break
            reason, pending = answer_ready(parser, session, out)
        await self._send(sock, out)
        return not (session.quit or self.control.closing)

    @staticmethod
    def _ended(parser: Parser) -> None:
        """The peer closed its side: only a cut-off command can be left."""
        parser.feed_eof()
        try:
            parser.next_command()
        except ProtocolError as error:
            log.warning("%s", error)

    async def _wait_readable_or_idle(self, sock: socket.socket) -> bool:
        """False when the idle timeout passed first.

        The hot path waits without a cancel scope (one per wait cost a
        noticeable share of a round trip); shutdown wakes idle connections by
        shutting their read side instead (see request_shutdown).
        """
        with trio.move_on_after(self.idle_timeout) as scope:
            await trio.lowlevel.wait_readable(sock)
        return not scope.cancelled_caught

    async def _send(self, sock: socket.socket, out: list[bytes]) -> None:
        """Make the changes so far durable enough to reply, then send ``out``."""
        durable = self.store.commit()
        if durable is not None:
            await durable.wait()
        if not out:
            return
        rest = send_now(sock, out, self.counters)
        if rest:
            await self._send_all(sock, rest)

    async def _release(self, session: Session) -> None:
        """The connection ended: its open items go back, and that is written.
        Nobody waits for a reply, so a store that is slow or failing costs
        only a log line."""
        try:
            with trio.move_on_after(SHUTDOWN_GRACE):
                released = session.release()
                if released.__class__ is Pending:
                    await released.wait()
                self.store.commit()
        except Exception:
            log.exception("could not release a closed connection's open items")

    @staticmethod
    async def _send_all(sock: socket.socket, view: memoryview) -> None:
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            view = view[sent:]
