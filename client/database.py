"""Where the reference application keeps its data, and how to open it.

The URL comes from ``--database`` or ``$APP_DATABASE_URL``; the default is a
SQLite file under the repository's ``var/``. Any SQLAlchemy URL works:
``postgresql+psycopg://user@127.0.0.1:5432/db``,
``mysql+pymysql://root@127.0.0.1:3306/db``.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from client.models import Base, Problem
from client.problems import BUILT_IN_PROBLEMS

REPO = Path(__file__).resolve().parent.parent
DEFAULT_URL = f"sqlite:///{REPO / 'var' / 'reference-app.db'}"


def database_url(explicit: str | None = None) -> str:
    """``explicit``, else ``$APP_DATABASE_URL``, else the default SQLite file."""
    return explicit or os.environ.get("APP_DATABASE_URL") or DEFAULT_URL


def make_engine(url: str | None = None, *, create=sqlalchemy.create_engine) -> Engine:
    """An engine for ``url``; ``create`` lets workers pass their fork-safe
    ``starlingpy.worker.db.create_engine``."""
    url = database_url(url)
    if url.startswith("sqlite"):
        # Several processes write: wait for the lock rather than fail at once.
        engine = create(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_wal)
        return engine
    return create(url, pool_pre_ping=True)


def _sqlite_wal(dbapi_connection, _record) -> None:
    # WAL lets the web tier read while a worker writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def prepare(engine: Engine) -> None:
    """Create the tables if missing and add the built-in problems once."""
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        known = set(session.scalars(select(Problem.slug)))
        for problem in BUILT_IN_PROBLEMS:
            if problem["slug"] not in known:
                session.add(Problem(**problem))
        session.commit()
