"""The database engines a worker uses: verified before each message, one
Session per engine per message, fork-safe.

A long-lived worker waits on an empty queue for minutes or hours. Meanwhile
the database server may drop its idle connections (MariaDB ``wait_timeout``,
PostgreSQL ``idle_session_timeout``, an admin's ``KILL``, a restart). The
classic symptom is the first task after a quiet spell failing with "server
has gone away". :meth:`Databases.verify` prevents it: before each message it
checks out every idle pooled connection of every registered engine, pings it
(the dialect's own ping: ``COM_PING`` for PyMySQL, ``SELECT 1`` elsewhere),
and invalidates the dead ones; the pool then opens a fresh connection on the
next checkout, so the task never sees the dead one. Engines made by
:func:`create_engine` also set ``pool_pre_ping=True`` so a checkout during a
long task is covered too. Tasks may call :func:`verify` themselves during long
work.

Each message runs inside :meth:`Databases.message_scope`: tasks get the
message's Session from :func:`session` (created on first use, one per
engine); after the message every Session is rolled back if the task raised,
and closed either way, so nothing leaks from one message into the next. A task
commits its own work (``session().commit()``): the worker never commits for
it.

Usage in a task module::

    from starlingpy.worker import db
    engine = db.create_engine("postgresql+psycopg://app@127.0.0.1/app")

    @tasks.task(queue="pulls")
    def record(n):
        s = db.session()
        s.execute(text("insert into t (n) values (:n)"), {"n": n})
        s.commit()

and ``Worker(..., engines=[engine])`` registers the engine.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterable, Iterator

import sqlalchemy
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from starlingpy.worker import forksafe

__all__ = ["Databases", "create_engine", "session", "verify", "verify_engine"]

log = logging.getLogger(__name__)

_current: contextvars.ContextVar[_MessageScope | None] = contextvars.ContextVar(
    "starlingpy_message_scope", default=None)


def create_engine(url: str, **kwargs) -> Engine:
    """``sqlalchemy.create_engine`` with ``pool_pre_ping=True`` and fork
    protection (:mod:`starlingpy.worker.forksafe`)."""
    kwargs.setdefault("pool_pre_ping", True)
    return forksafe.protect(sqlalchemy.create_engine(url, **kwargs))


def verify_engine(engine: Engine) -> int:
    """Ping every idle pooled connection of ``engine``; invalidate the dead
    ones so the pool replaces them on next checkout. Returns how many were
    dead. Never raises for a dead connection; an unreachable database shows up
    later, when the task connects."""
    pool = engine.pool
    count_idle = getattr(pool, "checkedin", None)
    # Pools without an idle count (SingletonThreadPool, StaticPool) hold at
    # most one connection per thread: check that one.
    idle = count_idle() if count_idle is not None else 1
    held = []
    dead = 0
    try:
        for _ in range(idle):
            # Checking out all of them at once makes the pool hand each idle
            # connection out exactly once (a pre-ping checkout may already
            # replace a dead one here; that is fine).
            held.append(pool.connect())
        for proxied in held:
            if not _ping(engine, proxied):
                proxied.invalidate()
                dead += 1
    finally:
        for proxied in held:
            proxied.close()
    if dead:
        log.info("replaced %d dead connection(s) of %s", dead, engine.url.render_as_string())
    return dead


def _ping(engine: Engine, proxied) -> bool:
    try:
        return bool(engine.dialect.do_ping(proxied.dbapi_connection))
    except Exception:  # any failure means: do not hand this connection to a task
        return False


class Databases:
    """The engines one worker uses.

    ``register(engine)`` adds an engine and protects it across forks;
    ``verify()`` checks all their idle connections; ``message_scope()`` is the
    per-message context in which :func:`session` works.
    """

    def __init__(self, engines: Iterable[Engine] = ()) -> None:
        self.engines: list[Engine] = []
        for engine in engines:
            self.register(engine)

    def register(self, engine: Engine) -> Engine:
        if engine not in self.engines:
            self.engines.append(engine)
        forksafe.protect(engine)
        return engine

    def verify(self) -> int:
        """Verify every registered engine; returns the number of dead
        connections replaced."""
        return sum(verify_engine(engine) for engine in self.engines)

    @contextlib.contextmanager
    def message_scope(self, verify_first: bool = True) -> Iterator[_MessageScope]:
        """Verify connections, then run the body with per-message Sessions:
        rolled back if the body raises, closed always."""
        if verify_first:
            self.verify()
        scope = _MessageScope(self)
        token = _current.set(scope)
        try:
            yield scope
        except BaseException:
            scope.finish(rollback=True)
            raise
        else:
            scope.finish(rollback=False)
        finally:
            _current.reset(token)


class _MessageScope:
    def __init__(self, databases: Databases) -> None:
        self.databases = databases
        self.sessions: dict[Engine, Session] = {}

    def session(self, engine: Engine | None = None) -> Session:
        if engine is None:
            if not self.databases.engines:
                raise LookupError("no engine is registered with this worker")
            engine = self.databases.engines[0]
        found = self.sessions.get(engine)
        if found is None:
            found = self.sessions[engine] = Session(bind=engine)
        return found

    def finish(self, rollback: bool) -> None:
        for sess in self.sessions.values():
            try:
                if rollback:
                    sess.rollback()
            except Exception:  # a rollback on a broken connection must not hide the task's error
                log.exception("rollback failed")
            finally:
                sess.close()
        self.sessions.clear()


def session(engine: Engine | None = None) -> Session:
    """The current message's Session for ``engine`` (default: the worker's
    first registered engine). Only valid while a worker handles a message."""
    scope = _current.get()
    if scope is None:
        raise LookupError("db.session() is only available while a worker handles a message")
    return scope.session(engine)


def verify() -> int:
    """Verify the current worker's engines now (for tasks doing long work)."""
    scope = _current.get()
    if scope is None:
        raise LookupError("db.verify() is only available while a worker handles a message")
    return scope.databases.verify()
