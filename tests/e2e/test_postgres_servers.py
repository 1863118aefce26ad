"""Several `starlingpy serve --store postgresql://...` processes on one
database: every item delivered once, FIFO per producer; a killed server's
open items come back after the lease; a server whose database connections
are cut answers SERVER_ERROR, loses nothing it acknowledged, and serves again."""

from __future__ import annotations

import threading

import pytest

from tests.pgschema import PG_URL, private_schema, schema_url
from tests.support import BlockingClient, ServerProcess, wait_until

pytestmark = pytest.mark.db


@pytest.fixture
def url():
    with private_schema() as schema:
        yield schema_url(schema)


def pg_server(tmp_path, url, identity, *extra):
    return ServerProcess(tmp_path / identity, "--store", url, "--identity", identity, *extra)


def set_many(client: BlockingClient, queue: bytes, items: list[bytes]) -> None:
    """Pipelined sets, every one acknowledged."""
    client.sock.sendall(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (queue, len(i), i) for i in items))
    for _ in items:
        assert client.read_until(b"\r\n") == b"STORED\r\n"


def test_four_servers_eight_consumers_every_item_once_fifo_per_producer(tmp_path, url):
    producers, per_producer = 4, 5000
    servers = [pg_server(tmp_path, url, f"s{n}").start() for n in range(4)]
    try:
        def produce(n: int) -> None:
            with BlockingClient(servers[n].address) as client:
                for start in range(0, per_producer, 250):
                    set_many(client, b"work", [b"%d:%05d" % (n, i) for i in range(start, start + 250)])

        got: list[list[bytes]] = [[] for _ in range(8)]
        done = threading.Event()
        total = producers * per_producer
        lock = threading.Lock()
        count = [0]

        def consume(n: int) -> None:
            with BlockingClient(servers[n % 4].address, timeout=30) as client:
                while not done.is_set():
                    item = client.get(b"work/t=200")
                    if item is not None:
                        got[n].append(item)
                        with lock:
                            count[0] += 1
                            if count[0] >= total:
                                done.set()

        threads = [threading.Thread(target=consume, args=(n,)) for n in range(8)]
        threads += [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
        for thread in threads:
            thread.start()
        assert done.wait(120), f"only {count[0]} of {total} items arrived"
        for thread in threads:
            thread.join(30)
        everything = [item for items in got for item in items]
        assert len(everything) == total and len(set(everything)) == total  # each exactly once
        for items in got:  # each consumer saw each producer's items in the order they were set
            for n in range(producers):
                mine = [item for item in items if item.startswith(b"%d:" % n)]
                assert mine == sorted(mine)
        assert sum(1 for items in got if items) >= 4  # the work was shared out
        with BlockingClient(servers[0].address) as client:
            assert client.get(b"work") is None
    finally:
        for server in servers:
            server.kill()


def test_a_killed_servers_open_items_come_back_after_the_lease(tmp_path, url):
    a = pg_server(tmp_path, url, "a", "--lease", "1.5").start()
    b = pg_server(tmp_path, url, "b", "--lease", "1.5").start()
    try:
        with BlockingClient(b.address) as client:
            set_many(client, b"jobs", [b"job%d" % i for i in range(5)])
        holders = [BlockingClient(a.address) for _ in range(3)]
        held = [holder.get(b"jobs/open") for holder in holders]
        assert held == [b"job0", b"job1", b"job2"]
        with BlockingClient(a.address) as client:
            assert client.call(b"get jobs/close\r\n", b"END\r\n") == b"END\r\n"  # holds nothing
        assert holders[0].call(b"get jobs/close\r\n", b"END\r\n") == b"END\r\n"  # job0 confirmed
        a.kill()
        with BlockingClient(b.address) as client:
            assert client.get(b"jobs") == b"job3"  # not held: served at once
            assert client.get(b"jobs") == b"job4"
            back = wait_until(lambda: client.drain(b"jobs"), timeout=20,
                              message="the dead server's leases to run out")
            back += client.drain(b"jobs")
        assert back == [b"job1", b"job2"]  # at their original places; job0 was confirmed
    finally:
        a.kill()
        b.kill()


def test_cut_database_connections_give_server_error_then_service(tmp_path, url):
    psycopg = pytest.importorskip("psycopg")
    server = pg_server(tmp_path, url, "cut").start()
    acknowledged: list[bytes] = []
    answers: list[bytes] = []
    try:
        client = BlockingClient(server.address)
        for i in range(300):
            if i == 150:
                with psycopg.connect(PG_URL, autocommit=True) as admin:
                    cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                        " WHERE application_name = 'starlingpy cut'").fetchone()[0]
                assert cut >= 1
            data = b"i%03d" % i
            try:
                reply = client.call(b"set q 0 0 %d\r\n%s\r\n" % (len(data), data))
            except (EOFError, ConnectionError):
                reply = b"(closed)"
            answers.append(reply)
            if reply == b"STORED\r\n":
                acknowledged.append(data)
            else:
                client.close()
                client = BlockingClient(server.address)
        errors = [reply for reply in answers if reply != b"STORED\r\n"]
        assert errors and all(reply.startswith((b"SERVER_ERROR", b"(closed)")) for reply in errors)
        assert any(reply.startswith(b"SERVER_ERROR store unavailable") for reply in errors)
        assert answers[-1] == b"STORED\r\n"  # serving again, without a restart
        drained = client.drain(b"q")
        assert len(drained) == len(set(drained))  # nothing twice
        assert set(acknowledged) <= set(drained)  # nothing acknowledged lost
        assert drained == sorted(drained)  # in order
        client.close()
    finally:
        server.kill()
