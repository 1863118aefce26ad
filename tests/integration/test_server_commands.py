"""The server over real loopback sockets, command by command."""

from __future__ import annotations

import trio

from tests.integration.conftest import start_server


def stat_value(stats: bytes, name: str) -> str:
    for line in stats.split(b"\r\n"):
        parts = line.split(b" ", 2)
        if len(parts) == 3 and parts[1] == name.encode():
            return parts[2].decode()
    raise KeyError(name)


async def test_set_then_get_round_trips_data_and_flags(client):
    assert await client.call(b"set jobs 42 0 5\r\nhello\r\n") == b"STORED\r\n"
    assert await client.call(b"get jobs\r\n", b"END\r\n") == b"VALUE jobs 42 5\r\nhello\r\nEND\r\n"
    assert await client.call(b"get jobs\r\n", b"END\r\n") == b"END\r\n"


async def test_get_of_a_never_used_queue_is_just_end(client):
    assert await client.call(b"get nothing_here\r\n", b"END\r\n") == b"END\r\n"


async def test_items_come_out_in_fifo_order(client):
    for i in range(5):
        await client.call(b"set q 0 0 1\r\n%d\r\n" % i)
    got = [await client.call(b"get q\r\n", b"END\r\n") for _ in range(5)]
    assert got == [b"VALUE q 0 1\r\n%d\r\nEND\r\n" % i for i in range(5)]


async def test_gets_is_a_synonym_with_cas_field(client):
    await client.call(b"set q 0 0 2\r\nab\r\n")
    assert await client.call(b"gets q\r\n", b"END\r\n") == b"VALUE q 0 2 0\r\nab\r\nEND\r\n"


async def test_multi_key_get_takes_one_item_per_key(client):
    await client.call(b"set a 0 0 1\r\n1\r\n")
    await client.call(b"set b 0 0 1\r\n2\r\n")
    reply = await client.call(b"get a b c\r\n", b"END\r\n")
    assert reply == b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\n"


async def test_pipelined_commands_get_replies_in_order(client):
    batch = b"".join(b"set p 0 0 3\r\n%03d\r\n" % i for i in range(50)) + b"get p\r\n" * 50
    await client.send(batch)
    replies = await client.read_until(b"END\r\n" * 1) + b""
    for _ in range(49):
        replies += await client.read_until(b"END\r\n")
    assert replies.startswith(b"STORED\r\n" * 50)
    values = replies[len(b"STORED\r\n") * 50:]
    assert values == b"".join(b"VALUE p 0 3\r\n%03d\r\nEND\r\n" % i for i in range(50))


async def test_command_split_over_many_segments(client):
    message = b"set split 7 0 10\r\n0123456789\r\nget split\r\n"
    for byte in message:
        await client.send(bytes([byte]))
    assert await client.read_until(b"END\r\n") == b"STORED\r\nVALUE split 7 10\r\n0123456789\r\nEND\r\n"


async def test_bare_newline_is_accepted(client):
    assert await client.call(b"set n 0 0 1\n1\r\nget n\n", b"END\r\n") == \
        b"STORED\r\nVALUE n 0 1\r\n1\r\nEND\r\n"


async def test_noreply_set_sends_nothing_and_stores(client):
    await client.send(b"set q 0 0 1 noreply\r\nx\r\n")
    assert await client.call(b"get q\r\n", b"END\r\n") == b"VALUE q 0 1\r\nx\r\nEND\r\n"


async def test_expired_items_are_never_returned_and_are_counted(client):
    await client.call(b"set e 0 -1 1\r\nx\r\n")
    await client.call(b"set e 0 0 1\r\ny\r\n")
    assert await client.call(b"get e\r\n", b"END\r\n") == b"VALUE e 0 1\r\ny\r\nEND\r\n"
    stats = await client.call(b"stats\r\n", b"END\r\n")
    assert stat_value(stats, "queue_e_expired_items") == "1"


async def test_peek_does_not_remove(client):
    await client.call(b"set pk 0 0 1\r\nz\r\n")
    assert await client.call(b"get pk/peek\r\n", b"END\r\n") == b"VALUE pk/peek 0 1\r\nz\r\nEND\r\n"
    assert await client.call(b"get pk\r\n", b"END\r\n") == b"VALUE pk 0 1\r\nz\r\nEND\r\n"


async def test_error_replies_keep_the_connection_usable(client):
    assert await client.call(b"bogus\r\n") == b"ERROR\r\n"
    assert await client.call(b"set q x 0 1\r\n") == b"CLIENT_ERROR bad command line format\r\n"
    assert await client.call(b"set a/b 0 0 1\r\nx\r\n") == b"CLIENT_ERROR bad queue name\r\n"
    assert await client.call(b"set q 0 0 1\r\nxyz\r\n") == b"CLIENT_ERROR bad data chunk\r\n"
    assert await client.call(b"add q 0 0 3\r\nabc\r\n") == \
        b"SERVER_ERROR not supported by a queue server\r\n"
    assert await client.call(b"incr q 1\r\n") == b"SERVER_ERROR not supported by a queue server\r\n"
    assert (await client.call(b"version\r\n")).startswith(b"VERSION starlingpy ")
    assert await client.call(b"verbosity 1\r\n") == b"OK\r\n"


async def test_item_over_the_size_limit_is_refused_and_discarded(nursery, tmp_path):
    running = await start_server(nursery, tmp_path / "s", max_item_size=1000)
    client = await running.connect()
    big = b"x" * 5000
    assert await client.call(b"set big 0 0 5000\r\n" + big + b"\r\n") == \
        b"SERVER_ERROR object too large for cache\r\n"
    assert await client.call(b"set ok 0 0 2\r\nhi\r\n") == b"STORED\r\n"
    assert await client.call(b"get big\r\n", b"END\r\n") == b"END\r\n"
    running.server.request_shutdown()


async def test_line_too_long_closes_the_connection(client):
    await client.send(b"get " + b"a" * 3000 + b"\r\n")
    assert await client.read_eof() == b"CLIENT_ERROR line too long\r\n"


async def test_delete_and_flush(client):
    await client.call(b"set d 0 0 1\r\n1\r\n")
    assert await client.call(b"delete d\r\n") == b"DELETED\r\n"
    assert await client.call(b"delete d\r\n") == b"NOT_FOUND\r\n"
    await client.call(b"set f 0 0 1\r\n1\r\n")
    await client.call(b"set f 0 0 1\r\n2\r\n")
    assert await client.call(b"flush f\r\n") == b"END\r\n"
    assert await client.call(b"get f\r\n", b"END\r\n") == b"END\r\n"


async def test_delete_removes_the_queue_files(running, client):
    await client.call(b"set gone 0 0 1\r\n1\r\n")
    assert any(running.directory.iterdir())
    await client.call(b"delete gone\r\n")
    assert not [p for p in running.directory.iterdir() if "gone" in p.name]


async def test_flush_all_keeps_queues_unless_enabled(client, nursery, tmp_path):
    await client.call(b"set keep 0 0 1\r\n1\r\n")
    assert await client.call(b"flush_all\r\n") == b"OK\r\n"
    assert await client.call(b"get keep\r\n", b"END\r\n") == b"VALUE keep 0 1\r\n1\r\nEND\r\n"

    running = await start_server(nursery, tmp_path / "other", flush_all_empties=True)
    other = await running.connect()
    await other.call(b"set keep 0 0 1\r\n1\r\n")
    assert await other.call(b"flush_all\r\n") == b"OK\r\n"
    assert await other.call(b"get keep\r\n", b"END\r\n") == b"END\r\n"
    running.server.request_shutdown()


async def test_stats_has_server_and_queue_lines_that_agree(client):
    for _ in range(3):
        await client.call(b"set s1 0 0 4\r\nabcd\r\n")
    await client.call(b"get s1\r\n", b"END\r\n")
    stats = await client.call(b"stats\r\n", b"END\r\n")
    for name in ("pid uptime time version rusage_user rusage_system curr_items total_items bytes "
                 "curr_connections total_connections cmd_get cmd_set get_hits get_misses "
                 "bytes_read bytes_written limit_maxbytes").split():
        stat_value(stats, name)
    assert stat_value(stats, "queue_s1_items") == "2"
    assert stat_value(stats, "queue_s1_total_items") == "3"
    assert stat_value(stats, "queue_s1_bytes") == "8"
    assert stat_value(stats, "curr_items") == "2"
    assert stat_value(stats, "cmd_set") == "3"
    assert stat_value(stats, "get_hits") == "1"
    assert int(stat_value(stats, "queue_s1_logsize")) > 0
    for suffix in ("expired_items", "age", "open_transactions", "waiters"):
        stat_value(stats, f"queue_s1_{suffix}")


async def test_quit_closes_the_connection(client):
    await client.send(b"quit\r\n")
    assert await client.read_eof() == b""


async def test_shutdown_is_refused_unless_enabled(client):
    assert await client.call(b"shutdown\r\n") == b"ERROR: shutdown not enabled\r\n"


async def test_shutdown_when_enabled_stops_the_server(nursery, tmp_path):
    running = await start_server(nursery, tmp_path / "s", enable_shutdown=True)
    client = await running.connect()
    await client.call(b"set q 0 0 1\r\n1\r\n")
    assert await client.call(b"shutdown\r\n") == b"OK\r\n"
    with trio.fail_after(10):
        while True:
            try:
                other = await trio.open_tcp_stream("127.0.0.1", running.port)
            except OSError:
                break
            await other.aclose()
            await trio.sleep(0.01)
