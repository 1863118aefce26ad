"""Connections served in passes (starlingpy.passes), against a stuck disk."""

from __future__ import annotations

import os
import socket
import threading

import trio

import starlingpy.journal.sync as sync_module
from tests.integration.conftest import start_server

SET = b"set q 0 0 3\r\nabc\r\n"


def hold_fsyncs(monkeypatch) -> tuple[threading.Event, list]:
    """From now on, every fsync round blocks (in the fsync thread) until the event is set:
    a disk that does not answer."""
    release, entered = threading.Event(), []
    real = sync_module._fsync_all

    def stuck(files, dirs):
        entered.append(threading.current_thread().name)
        release.wait(30)
        real(files, dirs)

    monkeypatch.setattr(sync_module, "_fsync_all", stuck)
    return release, entered


def nothing_to_read(client) -> bool:
    if client.buffer:
        return False
    with socket.socket(fileno=os.dup(client.stream.socket.fileno())) as peek:
        try:
            return not peek.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True


async def wait_for(predicate, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_a_stuck_fsync_stalls_no_reply_that_does_not_wait_for_it(nursery, tmp_path,
                                                                       monkeypatch):
    # Sync every 10 ms: replies never wait for an fsync, so a disk that does
    # not answer must not hold up any of them.
    running = await start_server(nursery, tmp_path / "spool", sync="10")
    release, entered = hold_fsyncs(monkeypatch)
    clients = [await running.connect() for _ in range(3)]
    assert await clients[0].call(SET) == b"STORED\r\n"
    await wait_for(lambda: entered)  # the periodic round is stuck in the fsync thread
    try:
        for _ in range(20):
            for client in clients:
                assert await client.call(SET) == b"STORED\r\n"
                assert (await client.call(b"get q\r\n", b"END\r\n")
                        == b"VALUE q 0 3\r\nabc\r\nEND\r\n")
        assert entered == ["starlingpy-fsync"]  # still the one stuck round
    finally:
        release.set()
    running.server.request_shutdown()


async def test_sync_always_replies_only_after_the_fsync(nursery, tmp_path,
                                                                        monkeypatch):
    running = await start_server(nursery, tmp_path / "spool", sync="always")
    release, entered = hold_fsyncs(monkeypatch)
    writer, other = await running.connect(), await running.connect()
    await writer.send(SET)
    await wait_for(lambda: entered)
    try:
        assert nothing_to_read(writer)  # its reply waits for the disk
        await other.send(b"bogus\r\n")  # (answered once the round is done: one commit)
    finally:
        release.set()
    assert await writer.read_until(b"\r\n") == b"STORED\r\n"
    assert await other.read_until(b"\r\n") == b"ERROR\r\n"
    assert await other.call(b"get q\r\n", b"END\r\n") == b"VALUE q 0 3\r\nabc\r\nEND\r\n"
    running.server.request_shutdown()
