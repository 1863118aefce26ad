"""Serving plain connections in passes: one readiness wait for all of them.

A client that waits for each reply sends one request per round trip; giving
each connection its own trio task costs a task switch, two readiness
re-arms (``epoll_ctl``) and a scheduler pass per request, about half of a
request's CPU (issue 11). Here the connections that have nothing to wait
for are registered, once, in our own epoll set; one trio task waits for
that set to be readable (trio's ``wait_readable`` on the epoll descriptor:
a checkpoint, so timers, signals and every other task keep their turn) and
then serves every ready connection in one pass: one ``recv`` each (at most
``RECV_SIZE``, so a pipelining client gets no more than its share of a
pass), its commands answered, one ``store.commit()`` for the whole pass
(write before reply), then the replies sent.

Whatever must wait goes back to the connection's own task, which sits
parked meanwhile (a parked task costs nothing per request): a command that
answered with a Pending, more replies than ``SEND_HIGH_WATER``, a send the
socket did not take whole, end of file, errors and closing. The task does
that with the same code as a connection that is not multiplexed
(``starlingpy.tcp``) and then parks itself here again. Under ``--sync
always``, one task per pass waits for the group commit and then sends that
pass's replies, while later passes serve the other connections (a slow disk
delays only the replies that wait for it).
"""

from __future__ import annotations

import select
import socket
from typing import Any

import trio

from starlingpy.protocol import Parser, ProtocolError
from starlingpy.session import Session
from starlingpy.store import Pending

RECV_SIZE = 65536
# Send what has accumulated once it passes this, before parsing further, so
# a client pipelining gets of large items never makes us hold them all.
SEND_HIGH_WATER = 256 * 1024

# Why a connection is handed back to its task (with what it needs).
EOF = "eof"          # the peer closed its side (or shutdown cut our reads)
ANSWER = "answer"    # (ANSWER, reason, pending, out): answer_ready stopped for reason
SEND = "send"        # (SEND, rest): the socket took part of the replies

# Why answer_ready stopped before answering every complete command.
PENDING = "pending"  # a command answered with a Pending (returned with it)
FULL = "full"        # the replies passed SEND_HIGH_WATER
CLOSE = "close"      # quit, shutdown, or an error that ends the connection


def answer_ready(parser: Parser, session: Session, out: list[bytes]) -> tuple[str | None, Any]:
    """Answer the complete commands ``parser`` holds, appending the replies
    to ``out``; ``(None, None)`` when all were answered, else why it
    stopped: ``(PENDING, pending)``, ``(FULL, None)`` or ``(CLOSE, None)``.
    A ProtocolError is answered (and ends the connection if it says so)."""
    next_command, execute = parser.next_command, session.execute
    size = 0
    while True:
        try:
            command = next_command()
        except ProtocolError as error:
            if error.reply is not None:
                out.append(error.reply + b"\r\n")
            if error.close:
                return CLOSE, None
            continue
        if command is None:
            return None, None
        reply = execute(command)
        if reply.__class__ is Pending:
            return PENDING, reply
        if reply:
            out.append(reply)
            size += len(reply)
        if session.quit:
            return CLOSE, None
        if size > SEND_HIGH_WATER:
            return FULL, None


def send_now(sock, out: list[bytes], counters) -> memoryview | None:
    """Send as much of ``out`` as the socket takes now; the rest, if any."""
    data = out[0] if len(out) == 1 else b"".join(out)
    counters.bytes_written += len(data)
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    return memoryview(data)[sent:] if sent < len(data) else None


class Connection:
    """What the pass needs of one connection."""

    __slots__ = ("fd", "handed", "parser", "session", "sock", "task")

    def __init__(self, sock: socket.socket, session: Session, parser: Parser) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.parser = parser
        self.task: Any = None
        self.handed: Any = None  # what the task is woken for: a tuple, or an exception


class Passes:
    """The set of parked connections and the task that serves them."""

    def __init__(self, store, counters, control) -> None:
        self._store = store
        self._counters = counters
        self._control = control
        self._epoll = select.epoll()
        self._parked: dict[int, Connection] = {}
        self._waiters: trio.Nursery | None = None  # one task per pass whose replies wait

    def close(self) -> None:
        self._epoll.close()

    async def park(self, connection: Connection) -> tuple:
        """Leave ``connection`` to the passes until its task is needed; what
        for (see the module constants). Raises what its commands raised."""
        self._parked[connection.fd] = connection
        self._epoll.register(connection.fd, select.EPOLLIN)
        connection.task = trio.lowlevel.current_task()

        def abort(_raise_cancel) -> trio.lowlevel.Abort:
            self._leave(connection)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        handed, connection.handed = connection.handed, None
        if isinstance(handed, BaseException):
            raise handed
        return handed

    def _leave(self, connection: Connection) -> None:
        del self._parked[connection.fd]
        self._epoll.unregister(connection.fd)

    def _hand_back(self, connection: Connection, handed: tuple | Exception) -> None:
        self._leave(connection)
        connection.handed = handed
        trio.lowlevel.reschedule(connection.task)

    async def run(self) -> None:
        """Serve the parked connections, a pass per wake-up, until cancelled."""
        epoll_fd = self._epoll.fileno()
        wait_readable = trio.lowlevel.wait_readable
        poll = self._epoll.poll
        async with trio.open_nursery() as self._waiters:
            while True:
                await wait_readable(epoll_fd)
                self._pass(poll(0))

    def _pass(self, events: list[tuple[int, int]]) -> None:
        parked, counters = self._parked, self._counters
        closing = self._control.closing
        answered: list[tuple[Connection, list[bytes]]] = []
        for fd, _ in events:
            connection = parked.get(fd)
            if connection is None:
                continue
            if closing:  # shutdown: answer nothing more, the task closes
                self._hand_back(connection, (EOF,))
                continue
            try:
                data = connection.sock.recv(RECV_SIZE)
                if not data:
                    self._hand_back(connection, (EOF,))
                    continue
                counters.bytes_read += len(data)
                connection.parser.feed(data)
                out: list[bytes] = []
                reason, pending = answer_ready(connection.parser, connection.session, out)
            except BlockingIOError:
                continue
            except Exception as error:  # the task handles it as its own
                self._hand_back(connection, error)
                continue
            if reason is not None:
                self._hand_back(connection, (ANSWER, reason, pending, out))
            elif out:
                answered.append((connection, out))
        if answered:
            self._reply(answered)

    def _reply(self, answered: list[tuple[Connection, list[bytes]]]) -> None:
        """Make the pass's changes durable enough, then send its replies."""
        try:
            durable = self._store.commit()
        except Exception as error:
            for connection, _ in answered:
                self._hand_back(connection, error)
            return
        if durable is not None:
            # Sync always: one task waits for the group commit on behalf of
            # the whole pass, while the next passes serve the others; its
            # connections are not read meanwhile (their replies come first).
            for connection, _ in answered:
                self._epoll.modify(connection.fd, 0)
            self._waiters.start_soon(self._send_when_durable, durable, answered)
            return
        self._send(answered)

    async def _send_when_durable(self, durable, answered: list[tuple[Connection, list[bytes]]]
                                 ) -> None:
        try:
            await durable.wait()
        except Exception as error:
            failure = error
        else:
            failure = None
        parked = self._parked
        answered = [(connection, out) for connection, out in answered
                    if parked.get(connection.fd) is connection]  # (its task may be gone)
        if failure is not None:
            for connection, _ in answered:
                self._hand_back(connection, failure)
            return
        for connection, _ in answered:
            self._epoll.modify(connection.fd, select.EPOLLIN)
        self._send(answered)

    def _send(self, answered: list[tuple[Connection, list[bytes]]]) -> None:
        counters = self._counters
        for connection, out in answered:
            try:
                rest = send_now(connection.sock, out, counters)
            except Exception as error:
                self._hand_back(connection, error)
                continue
            if rest is not None:
                self._hand_back(connection, (SEND, rest))
