"""What only the PostgreSQL store has: its items table kept vacuumed."""

from __future__ import annotations

import pytest

from tests.pgschema import PG_URL, private_schema
from tests.store.conftest import answer
from tests.support import wait_until

pytestmark = pytest.mark.db


async def test_dead_rows_are_vacuumed_once_there_are_enough():
    from starlingpy.store.postgres import PostgresStore, _vacuum_if_dead

    with private_schema() as schema:
        store = PostgresStore.open(PG_URL, schema=schema, identity="vacuum")
        try:
            for i in range(3000):
                store.put(b"v", b"%d" % i, 0, 0)
            await answer(store.commit())
            await answer(store.flush(b"v"))
            for conn in store._db._idle:  # their counts reach the statistics now, not in 10 s
                conn.execute("SELECT pg_stat_force_next_flush()")

            def table_stat(column: str) -> int:
                return store._db.run_now(lambda conn: conn.execute(
                    f"SELECT {column} FROM pg_stat_user_tables"
                    " WHERE relid = 'starling_items'::regclass").fetchone()[0])

            def dead() -> int:
                return table_stat("n_dead_tup")

            wait_until(lambda: dead() >= 3000, message="the statistics to count the dead rows")
            assert await store._db.run(_vacuum_if_dead, 5000) == 0  # not enough yet
            assert await store._db.run(_vacuum_if_dead, 1000) >= 3000
            # (whether it could remove them depends on the oldest transaction on this shared server)
            wait_until(lambda: table_stat("vacuum_count") >= 1, message="the vacuum to show")
        finally:
            store.close()
