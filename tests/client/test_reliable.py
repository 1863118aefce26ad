"""Reliable reads as a context manager, against a real starlingpy server."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from starlingpy.client import ConfirmFailed, Message, ServerUnavailable
from tests.client.helpers import run_in_thread, wait_for_waiter
from tests.support import REPO, ServerProcess, wait_until


def open_transactions(client, queue):
    return sum(int(s.get(f"queue_{queue}_open_transactions", 0)) for s in client.stats().values())


def test_normal_exit_confirms_the_item(client, queue):
    client.set(queue, "job")
    with client.reliable(queue) as message:
        assert isinstance(message, Message) and message.value == "job"
        assert open_transactions(client, queue) == 1
        assert client.sizeof(queue) == 0
    assert open_transactions(client, queue) == 0
    assert client.get(queue) is None


def test_exception_aborts_the_item_back_to_the_head(client, queue):
    client.set(queue, "first")
    client.set(queue, "second")
    with pytest.raises(ZeroDivisionError):
        with client.reliable(queue) as message:
            assert message.value == "first"
            raise ZeroDivisionError
    assert open_transactions(client, queue) == 0
    assert [client.get(queue), client.get(queue)] == ["first", "second"]


def test_base_exceptions_abort_too(client, queue):
    client.set(queue, "job")
    with pytest.raises(KeyboardInterrupt):
        with client.reliable(queue):
            raise KeyboardInterrupt
    assert client.get(queue) == "job"


def test_nothing_arrived_yields_none(client, queue):
    with client.reliable(queue, timeout=0.2) as message:
        assert message is None
    with client.reliable([queue, queue + "_b"]) as message:
        assert message is None


def test_reliable_priority_order(client, queue):
    high, low = queue + "_high", queue + "_low"
    client.set(low, "l")
    client.set(high, "h")
    with client.reliable([high, low]) as message:
        assert (message.queue, message.value) == (high, "h")
    with pytest.raises(RuntimeError):
        with client.reliable([high, low]) as message:
            assert message.queue == low
            raise RuntimeError("task failed")
    assert client.sizeof(low) == 1  # aborted back


def test_blocking_reliable_read(client, server, make_client, queue):
    def consume():
        with client.reliable(queue, timeout=30) as message:
            return message.value

    waiting = run_in_thread(consume)
    watcher = make_client([server.address])
    wait_for_waiter(watcher, queue)
    watcher.set(queue, "late")
    assert waiting() == ("ok", "late")
    assert watcher.sizeof(queue) == 0 and open_transactions(watcher, queue) == 0


def test_blocking_reliable_priority_read(client, server, make_client, queue):
    high, low = queue + "_high", queue + "_low"

    def consume():
        with client.reliable([high, low], timeout=30) as message:
            return message.queue, message.value

    waiting = run_in_thread(consume)
    watcher = make_client([server.address])
    wait_for_waiter(watcher, high)
    watcher.set(high, "urgent")
    assert waiting() == ("ok", (high, "urgent"))


def test_a_process_that_dies_inside_the_block_loses_nothing(client, server, queue):
    client.set(queue, "survives")
    script = textwrap.dedent(f"""
        import os
        from starlingpy.client import Client
        with Client([{server.address!r}]).reliable({queue!r}) as message:
            assert message.value == "survives"
            os._exit(3)  # dies holding the open item, like SIGKILL mid-task
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=60)
    assert result.returncode == 3
    wait_until(lambda: client.sizeof(queue) == 1, message="the item back in the queue")
    assert client.get(queue) == "survives"


def test_confirm_failure_is_reported_and_the_item_comes_back(tmp_path, make_client, queue):
    with ServerProcess(tmp_path / "spool") as proc:
        client = make_client([proc.address])
        client.set(queue, "job")
        with pytest.raises(ConfirmFailed):
            with client.reliable(queue) as message:
                assert message.value == "job"
                proc.kill()
        proc.restart()
        assert wait_until(lambda: _get_when_back(client, queue), timeout=20,
                          message="the open item back after restart") == "job"


def _get_when_back(client, queue):
    try:
        return client.get(queue)
    except ServerUnavailable:  # still in back-off after the kill
        return None
