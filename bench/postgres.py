"""`python -m bench.postgres`: the PostgreSQL store against the journal
store with ``--sync always``, and how its table bloats.

Throughput rows: set, get, mixed (set/get alternating) and /open+/close
(``get q/close/open``), 8 connections of 100 B items, depth 1 (each client
waits for its reply, as workers do), on one and on two front-ends over one
database (the 8 connections split between them), then the journal store
with ``--sync always``. CPU per op counts the front-ends and every
``postgres`` process on the machine (the database's share is real work of
the store).

Bloat (``--bloat N``): N items through one queue, then the dead tuples and
the size of the items table; then again while another connection holds a
transaction open (the xmin horizon), with the get rate both ways.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.loadgen import fill, run_load
from bench.peers import StarlingpyServer
from bench.procstat import cpu_seconds, pids_named
from bench.wire import MemcacheWire

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
QUEUE = b"bench"
VALUE = b"x" * 100
CONNECTIONS = 8


def admin():
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True)


def postgres_cpu() -> float:
    total = 0.0
    for pid in pids_named("postgres"):
        try:
            total += cpu_seconds(pid)
        except OSError:  # gone meanwhile
            pass
    return total


def measure(addresses, pattern: list[bytes], ops: int, servers) -> dict:
    """``ops`` requests of ``pattern`` over CONNECTIONS connections spread on ``addresses``."""
    cpu_before = sum(cpu_seconds(s.pid) for s in servers) + postgres_cpu()
    results = [None] * len(addresses)
    share = CONNECTIONS // len(addresses)

    def drive(i: int) -> None:
        results[i] = run_load(addresses[i], MemcacheWire, pattern, connections=share, depth=1,
                              total_ops=ops // len(addresses), time_limit=120)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(addresses))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = sum(cpu_seconds(s.pid) for s in servers) + postgres_cpu() - cpu_before
    done = sum(r.ops for r in results)
    elapsed = max(r.elapsed for r in results)
    errors = sum(r.kinds.get("error", 0) for r in results)
    return {"ops_s": done / elapsed, "cpu_us_per_op": cpu / done * 1e6, "errors": errors}


def scenarios(servers, ops: int) -> dict[str, dict]:
    addresses = [s.address for s in servers]
    wire = MemcacheWire
    rows = {"set": measure(addresses, [wire.set_request(QUEUE, VALUE)], ops, servers)}
    rows["get"] = measure(addresses, [wire.get_request(QUEUE)], ops, servers)
    rows["mixed"] = measure(addresses, [wire.set_request(QUEUE, VALUE), wire.get_request(QUEUE)],
                            ops, servers)
    fill(addresses[0], wire, QUEUE, VALUE, ops)
    rows["open+close"] = measure(addresses, [b"get %s/close/open\r\n" % QUEUE], ops, servers)
    return rows


def throughput(ops: int, spool: Path) -> dict[str, dict[str, dict]]:
    table = {}
    for fronts in (1, 2):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with admin() as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        servers = [StarlingpyServer(spool / f"{schema}{n}", "--store", url, "--identity",
                                    f"bench{n}").start() for n in range(fronts)]
        try:
            table[f"postgresql x{fronts}"] = scenarios(servers, ops)
        finally:
            for server in servers:
                server.kill()
            with admin() as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    with StarlingpyServer(spool / "journal", "--sync", "always") as server:
        table["journal sync=always"] = scenarios([server], ops)
    return table


def bloat(items: int, spool: Path, hold: bool) -> dict:
    """Push ``items`` through one queue (pipelined sets, then gets) in
    rounds of 10,000; report dead tuples, table size and the get rate."""
    schema = f"bloat_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    holder = admin() if hold else None
    try:
        if holder is not None:  # a transaction with a snapshot: the xmin horizon stays put
            holder.autocommit = False
            holder.execute("SELECT txid_current()").fetchone()
            holder.execute("SELECT count(*) FROM pg_class").fetchone()
        with StarlingpyServer(spool / schema, "--store", url, "--identity", schema) as server:
            get_seconds = 0.0
            rates = []  # gets/s of each round: how the rate moves as dead rows pile up
            for _ in range(0, items, 10_000):
                fill(server.address, MemcacheWire, QUEUE, VALUE, 10_000)
                result = run_load(server.address, MemcacheWire, [MemcacheWire.get_request(QUEUE)],
                                  connections=CONNECTIONS, depth=1, total_ops=10_000, time_limit=600)
                get_seconds += result.elapsed
                rates.append(result.ops_per_second)
        with admin() as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            dead, live, size = conn.execute(  # the items table is two partitions
                "SELECT sum(n_dead_tup), sum(n_live_tup), sum(pg_total_relation_size(relid))"
                " FROM pg_stat_user_tables WHERE schemaname = %s"
                " AND relname IN ('starling_items_0', 'starling_items_1')", (schema,)).fetchone()
        return {"items": items, "held_xmin": hold, "dead_tuples": int(dead), "live_tuples": int(live),
                "table_bytes": int(size), "gets_s": round(items / get_seconds),
                "gets_s_first_round": round(rates[0]), "gets_s_last_round": round(rates[-1])}
    finally:
        if holder is not None:
            holder.rollback()
            holder.close()
        with admin() as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.postgres", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000, help="operations per scenario")
    parser.add_argument("--bloat", type=int, default=0, metavar="N",
                        help="also push N items through a queue, with and without a held xmin horizon")
    parser.add_argument("--bloat-only", action="store_true", help="skip the throughput rows")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as spool:
        table = {} if args.bloat_only else throughput(args.ops, Path(spool))
        print(f"{'store':24} {'scenario':12} {'ops/s':>9} {'CPU us/op':>10} {'errors':>7}")
        for store, rows in table.items():
            for scenario, row in rows.items():
                print(f"{store:24} {scenario:12} {row['ops_s']:9.0f} {row['cpu_us_per_op']:10.0f}"
                      f" {row['errors']:7d}")
        sys.stdout.flush()
        if args.bloat:
            for hold in (False, True):
                started = time.monotonic()
                row = bloat(args.bloat, Path(spool), hold)
                print(f"bloat: {row} ({time.monotonic() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
