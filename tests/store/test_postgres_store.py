"""What only the PostgreSQL store has: its items table kept vacuumed, and
its two partitions rotated (sets switch to the other once one is bloated;
a drained one is truncated), with the queues' order kept across them."""

from __future__ import annotations

import pytest

from tests.pgschema import PG_URL, private_schema
from tests.store.conftest import answer
from tests.support import wait_until

pytestmark = pytest.mark.db
NEVER = 1 << 40


async def test_dead_rows_are_vacuumed_and_partitions_rotate():
    from starlingpy.store.postgres import PostgresStore, _vacuum_if_dead

    with private_schema() as schema:
        store = PostgresStore.open(PG_URL, schema=schema, identity="vacuum")
        run = store._db.run_now

        def value(sql: str):
            return run(lambda conn: conn.execute(sql).fetchone()[0])

        def partition_stat(column: str) -> int:
            return value(f"SELECT {column} FROM pg_stat_user_tables"
                         " WHERE relid = 'starling_items_0'::regclass")

        try:
            for i in range(3000):
                store.put(b"v", b"%d" % i, 0, 0)
            await answer(store.commit())
            await answer(store.flush(b"v"))
            for conn in store._db._idle:  # their counts reach the statistics now, not in 10 s
                conn.execute("SELECT pg_stat_force_next_flush()")
            wait_until(lambda: partition_stat("n_dead_tup") >= 3000,
                       message="the statistics to count the dead rows")
            assert run(_vacuum_if_dead, 5000, NEVER) == 0  # not enough yet
            assert run(_vacuum_if_dead, 1000, NEVER) >= 3000
            # (whether it could remove them depends on the oldest transaction on this shared server)
            wait_until(lambda: partition_stat("vacuum_count") >= 1, message="the vacuum to show")

            store.put(b"v", b"before", 0, 0)
            await answer(store.commit())
            run(_vacuum_if_dead, NEVER, 1)  # partition 0 counts as bloated: sets go to 1
            assert value("SELECT current FROM starling_rotation") == 1
            store.put(b"v", b"after", 0, 0)
            await answer(store.commit())
            assert value("SELECT array_agg(slot ORDER BY id) FROM starling_items") == [0, 1]
            assert (await answer(store.take([b"v"]))).data == b"before"
            assert (await answer(store.take([b"v"]))).data == b"after"
            assert value("SELECT pg_relation_size('starling_items_0')") > 0
            run(_vacuum_if_dead, NEVER, NEVER)  # partition 0 is drained: truncated
            assert value("SELECT pg_relation_size('starling_items_0')") == 0
            assert value("SELECT current FROM starling_rotation") == 1
        finally:
            store.close()
