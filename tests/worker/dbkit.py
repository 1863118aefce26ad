"""Real-database helpers for the worker tests: the two servers, a unique
table per test, which server-side session a pooled connection is, and ways
to kill sessions from the server side."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support import wait_until


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    url: str
    session_id_sql: str                    # this connection's server-side id
    kill_sql: str                          # kill session :sid
    alive_sql: str                         # count of sessions with id :sid
    idle_timeout_sql: str                  # make the server drop this session after ~1 s idle

    def admin(self) -> Engine:
        return sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)


MARIADB = Backend(
    name="mariadb",
    url="mysql+pymysql://root@127.0.0.1:3306/test",
    session_id_sql="SELECT CONNECTION_ID()",
    kill_sql="KILL :sid",
    alive_sql="SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :sid",
    idle_timeout_sql="SET SESSION wait_timeout = 1",
)
POSTGRES = Backend(
    name="postgresql",
    url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
    session_id_sql="SELECT pg_backend_pid()",
    kill_sql="SELECT pg_terminate_backend(:sid)",
    alive_sql="SELECT COUNT(*) FROM pg_stat_activity WHERE pid = :sid",
    idle_timeout_sql="SET SESSION idle_session_timeout = 500",
)
BACKENDS = [MARIADB, POSTGRES]


def unique_table(admin: Engine, prefix: str = "w") -> str:
    """Create ``<prefix>_<random>`` (id primary key, n int unique) and return
    its name; unique per test run so parallel runs never collide."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE TABLE {name} (n INTEGER NOT NULL PRIMARY KEY)"))
    return name


def drop_table(admin: Engine, name: str) -> None:
    with admin.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


def fill_pool(engine: Engine, backend: Backend, count: int, idle_timeout: bool = False) -> list[int]:
    """Open ``count`` pooled connections (all checked out at once, then
    returned) and return their server-side session ids. ``idle_timeout``:
    these sessions (only these, not their replacements) get a ~1 s idle
    timeout on the server."""
    conns = [engine.connect() for _ in range(count)]
    try:
        sids = []
        for conn in conns:
            if idle_timeout:
                conn.execute(text(backend.idle_timeout_sql))
                conn.commit()  # a SET inside a rolled-back transaction would be undone
            sids.append(conn.execute(text(backend.session_id_sql)).scalar_one())
        return sids
    finally:
        for conn in conns:
            conn.close()


def session_alive(admin: Engine, backend: Backend, sid: int) -> bool:
    with admin.connect() as conn:
        return bool(conn.execute(text(backend.alive_sql), {"sid": sid}).scalar_one())


def kill_sessions(admin: Engine, backend: Backend, sids: list[int]) -> None:
    """Kill each session from the server side and wait until it is gone."""
    with admin.connect() as conn:
        for sid in sids:
            conn.execute(text(backend.kill_sql), {"sid": sid})
        conn.commit()
    wait_sessions_gone(admin, backend, sids)


def wait_sessions_gone(admin: Engine, backend: Backend, sids: list[int], timeout: float = 15.0) -> None:
    wait_until(lambda: not any(session_alive(admin, backend, sid) for sid in sids),
               timeout=timeout, interval=0.05, message=f"{backend.name} sessions {sids} to end")


def rows(admin: Engine, table: str) -> list[int]:
    with admin.connect() as conn:
        return [r[0] for r in conn.execute(text(f"SELECT n FROM {table} ORDER BY n"))]


def insert_row(session_factory: Callable, table: str, n: int) -> None:
    sess = session_factory()
    sess.execute(text(f"INSERT INTO {table} (n) VALUES (:n)"), {"n": n})
    sess.commit()
