"""Misbehaving clients never stall or crash the server."""

from __future__ import annotations

import resource
import socket

import pymemcache
import pytest
import trio
from pymemcache import serde
from pymemcache.client.base import Client as MemcacheClient

from starlingpy.journal import SyncPolicy
from starlingpy.journal.store import JournalStore, StartupError
from tests.integration.conftest import start_server


@pytest.fixture(autouse=True)
def enough_file_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_thousand_connections_while_one_client_keeps_working(running, client):
    idle = []
    for _ in range(1000):
        idle.append(await trio.open_tcp_stream("127.0.0.1", running.port))
    for i in range(200):
        assert await client.call(b"set busy 0 0 4\r\n%04d\r\n" % i) == b"STORED\r\n"
        assert await client.call(b"get busy\r\n", b"END\r\n") == b"VALUE busy 0 4\r\n%04d\r\nEND\r\n" % i
    stats = await client.call(b"stats\r\n", b"END\r\n")
    assert b"STAT curr_connections 1001\r\n" in stats
    for stream in idle:
        await stream.aclose()


async def test_a_stalled_half_command_does_not_block_others(running, client):
    staller = await running.connect()
    await staller.send(b"set stalled 0 0 100\r\nonly part of it")
    await staller.send(b"get never")  # and an unfinished line on another
    for _ in range(20):
        assert await client.call(b"set fine 0 0 1\r\nx\r\n") == b"STORED\r\n"
    assert await client.call(b"get stalled\r\n", b"END\r\n") == b"END\r\n"


async def test_a_client_that_never_reads_replies_does_not_stall_others(running, client):
    flooder = socket.create_connection(("127.0.0.1", running.port))
    flooder.setblocking(False)
    await client.call(b"set f 0 0 1000\r\n" + b"y" * 1000 + b"\r\n")
    request = b"get f/peek\r\n" * 2000
    sent = 0
    # Keep writing until the kernel buffers on both sides are full.
    with trio.move_on_after(5):
        while True:
            try:
                sent += flooder.send(request)
            except BlockingIOError:
                break
            await trio.sleep(0)
    for _ in range(20):
        assert await client.call(b"set other 0 0 1\r\nx\r\n") == b"STORED\r\n"
    flooder.close()
    assert sent > 0


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_an_oversized_set_is_answered_at_once_and_its_block_dropped(running, client):
    # 48 MiB declared, over the 16 MiB item limit: the error comes before a
    # byte of the block is sent, then the block streams to nowhere.
    before = resident_bytes()
    size = 48 * 1024 * 1024
    assert await client.call(b"set big 0 0 %d\r\n" % size) == (
        b"SERVER_ERROR object too large for cache\r\n")
    chunk = b"z" * (1024 * 1024)
    for _ in range(48):
        await client.send(chunk)
    assert await client.call(b"\r\nset q 0 0 1\r\n1\r\n") == b"STORED\r\n"  # the next command
    stats = await client.call(b"stats\r\n", b"END\r\n")
    assert int(stats.split(b"STAT bytes_read ")[1].split(b"\r\n")[0]) > 40 * 1024 * 1024
    assert resident_bytes() - before < 24 * 1024 * 1024  # received and dropped, not held


async def test_an_absurd_declared_length_is_refused_and_the_connection_closed(running, client):
    await client.send(b"set huge 0 0 2147483648\r\n")  # 2 GiB: no client means that
    assert await client.read_eof() == b"SERVER_ERROR object too large for cache\r\n"
    other = await running.connect()
    assert await other.call(b"set q 0 0 1\r\n1\r\n") == b"STORED\r\n"


async def test_a_binary_protocol_request_gets_error_and_is_closed(running, client):
    await client.send(b"\x80\x00\x00\x05\x00\x00\x00\x00")  # a binary GET's header start
    assert await client.read_eof() == b"ERROR\r\n"


async def test_connections_past_the_limit_are_closed_at_once(nursery, tmp_path):
    running = await start_server(nursery, tmp_path / "s", max_connections=3)
    kept = [await running.connect() for _ in range(3)]
    for c in kept:
        assert await c.call(b"version\r\n")
    extra = await running.connect()
    assert await extra.read_eof() == b""
    assert (await kept[0].call(b"version\r\n")).startswith(b"VERSION")
    stats = await kept[0].call(b"stats\r\n", b"END\r\n")
    assert b"STAT rejected_connections 1\r\n" in stats
    running.server.request_shutdown()


HOSTILE_NAMES = [b"..", b"..%2fx", b"%2e%2e", b".hidden", b"a.b", b"\xc3\xa9t\xc3\xa9",
                 b"\xff\xfe", b"CON", b"x" * 250, b"-", b"_", b"%"]


async def test_hostile_queue_names_stay_inside_the_queue_directory(running, client, tmp_path):
    for name in HOSTILE_NAMES:
        assert await client.call(b"set " + name + b" 0 0 2\r\nhi\r\n") == b"STORED\r\n", name
    for name in HOSTILE_NAMES:
        assert await client.call(b"get " + name + b"\r\n", b"END\r\n") == \
            b"VALUE " + name + b" 0 2\r\nhi\r\nEND\r\n", name
    outside = [p for p in tmp_path.rglob("*") if running.directory not in (p, *p.parents)]
    assert outside == [running.directory] or outside == []
    for path in running.directory.rglob("*"):
        assert path.resolve().is_relative_to(running.directory.resolve())
    for name in (b"../x", b"/etc/x", b"a/../../x"):
        assert await client.call(b"set " + name + b" 0 0 2\r\nhi\r\n") == b"CLIENT_ERROR bad queue name\r\n"


def _pymemcache_session(port: int, result: dict) -> None:
    # pymemcache's default client sends `noreply` on every set.
    plain = MemcacheClient(("127.0.0.1", port), connect_timeout=5, timeout=5)
    for i in range(10):
        plain.set("interop", b"value-%d" % i)
    result["plain"] = [plain.get("interop") for _ in range(11)]
    with_serde = MemcacheClient(("127.0.0.1", port), serde=serde.pickle_serde, connect_timeout=5,
                                timeout=5)
    with_serde.set("objects", {"a": [1, 2]}, noreply=False)
    with_serde.set("objects", 7)
    with_serde.set("objects", "text")
    result["serde"] = [with_serde.get("objects") for _ in range(3)]
    result["version"] = plain.version()
    result["stats"] = plain.stats()
    plain.close()
    with_serde.close()


async def test_pymemcache_interop_noreply_and_serde_flags(running):
    result: dict = {}
    await trio.to_thread.run_sync(_pymemcache_session, running.port, result)
    assert result["plain"] == [b"value-%d" % i for i in range(10)] + [None]
    assert result["serde"] == [{"a": [1, 2]}, 7, "text"]
    assert result["version"].startswith(b"starlingpy")
    assert result["stats"][b"queue_interop_total_items"] == 10
    assert pymemcache.__version__


async def test_idle_connections_are_closed_after_the_timeout(nursery, tmp_path):
    running = await start_server(nursery, tmp_path / "s", idle_timeout=0.2)
    idle = await running.connect()
    assert (await idle.call(b"version\r\n")).startswith(b"VERSION")
    assert await idle.read_eof() == b""
    running.server.request_shutdown()


async def test_shutdown_answers_blocked_waiters_and_puts_open_items_back(nursery, tmp_path):
    running = await start_server(nursery, tmp_path / "s")
    holder = await running.connect()
    await holder.call(b"set r 0 0 1\r\nx\r\n")
    assert await holder.call(b"get r/open\r\n", b"END\r\n") == b"VALUE r/open 0 1\r\nx\r\nEND\r\n"
    await holder.call(b"set never 0 0 1\r\ny\r\n")  # made, then emptied: waiters show in stats
    assert await holder.call(b"get never\r\n", b"END\r\n") == b"VALUE never 0 1\r\ny\r\nEND\r\n"
    waiter = await running.connect()
    await waiter.send(b"get never/t=60000\r\n")
    with trio.fail_after(10):
        while not running.collection.statistics().get(b"never") or \
                running.collection.statistics()[b"never"].waiters != 1:
            await trio.sleep(0.005)
    running.server.request_shutdown()
    assert await waiter.read_eof() == b"END\r\n"
    assert await holder.read_eof() == b""
    # the server closed its journals; reopening shows the item back in place
    with trio.fail_after(10):
        while True:
            try:  # the lock is released once the server has closed its journals
                reopened = JournalStore.open(running.directory, sync=SyncPolicy.parse("never"))
                break
            except StartupError:
                await trio.sleep(0.01)
    assert reopened.get(b"r").take_nowait().data == b"x"
    reopened.close()


async def test_a_bug_inside_one_connection_ends_only_that_connection(running, monkeypatch, caplog):
    # Inject a fault where no client input could cause one: the handler of
    # `version` raising is a bug, not a protocol error.
    from starlingpy.session import Session

    def broken(self, command):
        raise RuntimeError("injected fault")

    victim = await running.connect()
    bystander = await running.connect()
    await bystander.call(b"set q 0 0 1\r\nx\r\n")
    monkeypatch.setattr(Session, "_version", broken)
    faulty = await running.connect()  # sessions made from now on bind the broken handler
    await faulty.send(b"version\r\n")
    assert await faulty.read_eof() == b"SERVER_ERROR internal error\r\n"
    assert "injected fault" in caplog.text and "Traceback" in caplog.text
    assert await bystander.call(b"get q\r\n", b"END\r\n") == b"VALUE q 0 1\r\nx\r\nEND\r\n"
    assert (await victim.call(b"stats\r\n", b"END\r\n")).startswith(b"STAT pid")


async def test_a_set_cut_off_by_the_client_closing_is_logged_not_stored(running, caplog):
    half = await running.connect()
    await half.send(b"set half 0 0 10\r\nabc")
    await half.stream.aclose()
    with trio.fail_after(10):
        while "connection closed in a set to queue 'half'" not in caplog.text:
            await trio.sleep(0.01)
    assert "3 of 10 data bytes received; the item is not stored" in caplog.text
    other = await running.connect()
    assert await other.call(b"get half\r\n", b"END\r\n") == b"END\r\n"
