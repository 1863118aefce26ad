"""Helpers for the client tests."""

from __future__ import annotations

import threading

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
