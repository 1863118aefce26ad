"""Delayed and unique items over the wire (PROTOCOL.md "Delayed items",
"Unique items"): replies, refusals, and a real server process restarted."""

from __future__ import annotations

import time

from tests.integration.test_server_commands import stat_value
from tests.support import BlockingClient, ServerProcess


async def test_set_options_are_parsed_and_refused_with_the_right_reply(client):
    assert await client.call(b"set q/unique=a.b:c-1_2 0 0 1\r\nx\r\n") == b"STORED\r\n"
    assert await client.call(b"set q/unique=a.b:c-1_2 0 0 1\r\ny\r\n") == b"NOT_STORED\r\n"
    assert await client.call(b"set q/delay=0/unique=other 0 0 1\r\nz\r\n") == b"STORED\r\n"
    assert await client.call(b"set q/delay=60000 0 0 1\r\nd\r\n") == b"STORED\r\n"
    bad_format = b"CLIENT_ERROR bad command line format\r\n"
    for key in (b"q/delay=", b"q/delay=-1", b"q/delay=1x", b"q/delay=99999999999999",
                b"q/unique=", b"q/unique=" + b"u" * 201, b"q/unique=a%b", b"q/unique=\xc3\xa9",
                b"q/delay=1/delay=2", b"q/unique=a/unique=b"):
        assert await client.call(b"set %s 0 0 1\r\nx\r\n" % key) == bad_format, key
    assert await client.call(b"set q/sideways=1 0 0 1\r\nx\r\n") == b"CLIENT_ERROR bad queue name\r\n"
    await client.send(b"set q/unique=x 0 0 1 noreply\r\nx\r\n")  # (no reply)
    stats = await client.call(b"stats\r\n", b"END\r\n")
    assert stat_value(stats, "queue_q_items") == "3"
    assert stat_value(stats, "queue_q_delayed_items") == "1"
    got = [await client.call(b"get q\r\n", b"END\r\n") for _ in range(4)]
    assert got == [b"VALUE q 0 1\r\nx\r\nEND\r\n", b"VALUE q 0 1\r\nz\r\nEND\r\n",
                   b"VALUE q 0 1\r\nx\r\nEND\r\n", b"END\r\n"]


async def test_a_waiting_get_is_answered_when_a_delayed_item_falls_due(client, running):
    other = await running.connect()
    await other.send(b"get later/t=30000\r\n")
    assert await client.call(b"set later/delay=300 0 0 4\r\nsoon\r\n") == b"STORED\r\n"
    put_at = time.time()
    assert await other.read_until(b"END\r\n") == b"VALUE later/t=30000 0 4\r\nsoon\r\nEND\r\n"
    assert time.time() >= put_at + 0.3 - 0.01  # never before it is due (the server's clock)
    await other.aclose()


def test_delays_and_unique_ids_are_kept_across_a_server_restart(tmp_path):
    with ServerProcess(tmp_path / "spool") as server:
        c = BlockingClient(server.address)
        put_at = time.time()
        assert c.call(b"set q/delay=3000/unique=once 0 0 5\r\nlater\r\n") == b"STORED\r\n"
        assert c.set(b"q", b"now") == b"STORED\r\n"
        server.kill()  # a crash
        server.restart()
        c = BlockingClient(server.address)
        assert c.call(b"set q/unique=once 0 0 3\r\ndup\r\n") == b"NOT_STORED\r\n"
        first = c.get(b"q")
        seen_before_due = c.get(b"q")
        checked_at = time.time()
        assert first == b"now"
        if checked_at < put_at + 3:  # (only what was seen before the due time says anything)
            assert seen_before_due is None
        assert c.get(b"q/t=20000") == b"later"
        assert time.time() >= put_at + 3 - 0.01
        assert c.call(b"set q/unique=once 0 0 4\r\nfree\r\n") == b"STORED\r\n"
