"""Per-message connection verification and fork safety against the real
MariaDB and PostgreSQL servers. Each scenario is also run without the
protection, to show that it then fails."""

from __future__ import annotations

import multiprocessing

import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from starlingpy.worker import db, forksafe
from tests.worker import dbkit
from tests.worker.dbkit import BACKENDS

pytestmark = pytest.mark.db  # real PostgreSQL and MariaDB

POOL = 3


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request):
    return request.param


@pytest.fixture
def admin(backend):
    engine = backend.admin()
    yield engine
    engine.dispose()


@pytest.fixture
def table(admin):
    name = dbkit.unique_table(admin)
    yield name
    dbkit.drop_table(admin, name)


def make_engine(backend, protected: bool):
    """protected: our worker's engine (pre-ping, verified, fork-safe);
    otherwise a plain engine, as an unprotected worker would have."""
    if protected:
        return db.create_engine(backend.url, pool_size=POOL)
    return sqlalchemy.create_engine(backend.url, pool_size=POOL)


def run_messages(databases: db.Databases, table: str, numbers, verify: bool) -> list[str]:
    """Handle one message per number, as the worker loop does; return one
    outcome per message (no retries: a failure is a failed first attempt)."""
    outcomes = []
    for n in numbers:
        try:
            with databases.message_scope(verify_first=verify):
                dbkit.insert_row(db.session, table, n)
            outcomes.append("ok")
        except DBAPIError as exc:
            outcomes.append(f"failed: {type(exc.orig).__name__}")
    return outcomes


@pytest.mark.parametrize("how", ["kill", "idle_timeout"])
def test_connections_dropped_while_idle_cost_no_failed_task(backend, admin, table, how):
    engine = make_engine(backend, protected=True)
    try:
        databases = db.Databases([engine])
        sids = dbkit.fill_pool(engine, backend, POOL, idle_timeout=(how == "idle_timeout"))
        if how == "kill":
            dbkit.kill_sessions(admin, backend, sids)
        else:
            dbkit.wait_sessions_gone(admin, backend, sids)  # the server's idle timeout ends them
        assert run_messages(databases, table, range(1, 7), verify=True) == ["ok"] * 6
        assert dbkit.rows(admin, table) == [1, 2, 3, 4, 5, 6]
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", ["kill", "idle_timeout"])
def test_without_verification_the_same_scenario_fails(backend, admin, table, how):
    engine = make_engine(backend, protected=False)
    try:
        databases = db.Databases()
        databases.engines.append(engine)  # bypass register(): no verification path at all
        sids = dbkit.fill_pool(engine, backend, POOL, idle_timeout=(how == "idle_timeout"))
        if how == "kill":
            dbkit.kill_sessions(admin, backend, sids)
        else:
            dbkit.wait_sessions_gone(admin, backend, sids)
        outcomes = run_messages(databases, table, range(1, 7), verify=False)
        assert outcomes[0].startswith("failed"), outcomes
    finally:
        engine.dispose()


def test_verify_replaces_exactly_the_dead_connections(backend, admin):
    engine = sqlalchemy.create_engine(backend.url, pool_size=POOL)  # no pre-ping: verify alone
    try:
        databases = db.Databases([engine])
        sids = dbkit.fill_pool(engine, backend, POOL)
        dbkit.kill_sessions(admin, backend, sids[:2])
        assert databases.verify() == 2
        assert databases.verify() == 0
        survivors = dbkit.fill_pool(engine, backend, POOL)
        assert sids[2] in survivors and not set(sids[:2]) & set(survivors)
    finally:
        engine.dispose()


def test_session_is_rolled_back_and_closed_when_the_task_raises(backend, admin, table):
    engine = make_engine(backend, protected=True)
    try:
        databases = db.Databases([engine])
        with pytest.raises(RuntimeError):
            with databases.message_scope() as scope:
                db.session().execute(text(f"INSERT INTO {table} (n) VALUES (1)"))
                raise RuntimeError("task failed before commit")
        assert scope.sessions == {}
        with databases.message_scope():
            dbkit.insert_row(db.session, table, 2)
        assert dbkit.rows(admin, table) == [2]
        assert engine.pool.checkedout() == 0, "every session gave its connection back"
    finally:
        engine.dispose()


def test_session_outside_a_message_is_an_error():
    with pytest.raises(LookupError):
        db.session()


# -- fork safety --------------------------------------------------------------

def _child_uses_the_database(engines) -> None:
    """What a forked child typically does: query, then clean up its engines."""
    for engine in engines:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()


def fork_child(engines) -> int:
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child_uses_the_database, args=(engines,))
    child.start()
    child.join(30)
    assert not child.is_alive()
    return child.exitcode


def server_session(engine, backend) -> int:
    with engine.connect() as conn:
        return conn.execute(text(backend.session_id_sql)).scalar_one()


@pytest.fixture
def both_engines():
    # No pre-ping: a dead connection must show up as an error, not be hidden
    # by a silent reconnect.
    engines = {b.name: sqlalchemy.create_engine(b.url, pool_size=1) for b in BACKENDS}
    yield engines
    for engine in engines.values():
        engine.dispose()


def test_forked_child_leaves_the_parents_connections_alone(both_engines):
    for engine in both_engines.values():
        forksafe.protect(engine)
    before = {b.name: server_session(both_engines[b.name], b) for b in BACKENDS}
    assert fork_child(list(both_engines.values())) == 0
    after = {b.name: server_session(both_engines[b.name], b) for b in BACKENDS}
    assert after == before, "the parent still uses its own, unbroken connections"


def test_without_fork_protection_the_parent_loses_its_connections(both_engines):
    for engine in both_engines.values():
        forksafe.unprotect(engine)
    for b in BACKENDS:
        server_session(both_engines[b.name], b)
    assert fork_child(list(both_engines.values())) == 0
    for b in BACKENDS:
        with pytest.raises(DBAPIError):
            server_session(both_engines[b.name], b)
