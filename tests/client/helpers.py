"""Helpers for the client tests."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

from starlingpy.client import Client
from tests.support import wait_until


def run_in_thread(function, *args, **kwargs):
    """Start ``function`` in a thread; returns ``join(deadline)`` giving
    ``("ok", value)`` or ``("error", exc)``, and failing if it never ends."""
    outcome = []

    def target():
        try:
            outcome.append(("ok", function(*args, **kwargs)))
        except BaseException as exc:  # reported to the test, not lost
            outcome.append(("error", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join(deadline: float = 30.0):
        thread.join(deadline)
        assert not thread.is_alive(), f"{function.__name__} did not return within {deadline}s"
        return outcome[0]

    return join


def waiters(client: Client, queue: str) -> int:
    """Clients blocked in /t= on ``queue``, summed over the servers."""
    return sum(int(stats.get(f"queue_{queue}_waiters", 0)) for stats in client.stats().values())


def wait_for_waiter(client: Client, queue: str) -> None:
    wait_until(lambda: waiters(client, queue) >= 1, message=f"a waiter on {queue}")


@contextlib.contextmanager
def tcp_stub(on_connection: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback listener whose accept loop (a thread) hands each connection
    to ``on_connection``; yields its ``host:port`` and closes it after."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # closed: the test is over
                return
            on_connection(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
