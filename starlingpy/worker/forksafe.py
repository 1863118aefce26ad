"""Fork safety for SQLAlchemy engines: a forked child never closes or reuses
its parent's pooled database connections.

A pooled connection is a socket to the database server. After ``fork`` the
child holds a copy of it; if the child checks it out (runs a query on the
parent's session) or closes it (``engine.dispose()``, which sends MySQL's
``COM_QUIT`` or PostgreSQL's ``Terminate``), the server drops the parent's
session. So, in every child, straight after the fork, each protected engine
gets a fresh, empty pool and the inherited one is dropped *without touching
its sockets* (``Engine.dispose(close=False)``, SQLAlchemy >= 1.4.33). The child
then opens its own connections if it needs any. Garbage-collecting the old
pool in the child is harmless: PyMySQL's ``__del__`` closes the socket without
``COM_QUIT`` and psycopg's libpq wrapper only sends ``Terminate`` in the
process that opened the connection.

The hook is installed with :func:`os.register_at_fork`, so it covers
``os.fork``, ``multiprocessing`` with the fork start method and any library
that forks through Python. It does not cover a connection the parent has
*checked out* at the moment of the fork (a Session in the middle of a task):
the child must not use the parent's Session objects.
"""

from __future__ import annotations

import os
import threading
import weakref

from sqlalchemy.engine import Engine

__all__ = ["protect", "unprotect"]

_protected: weakref.WeakSet[Engine] = weakref.WeakSet()
_install_lock = threading.Lock()
_installed = False


def protect(engine: Engine) -> Engine:
    """Give ``engine`` a fresh pool in every child forked from now on.
    Idempotent; returns the engine. Engines are held weakly."""
    _install()
    _protected.add(engine)
    return engine


def unprotect(engine: Engine) -> None:
    """Stop protecting ``engine`` (tests use this to show the failure)."""
    _protected.discard(engine)


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            os.register_at_fork(after_in_child=_discard_inherited_pools)
            _installed = True


def _discard_inherited_pools() -> None:
    # Runs in the child, between fork and the child's own code: keep it to
    # replacing pool objects, no I/O.
    for engine in list(_protected):
        engine.dispose(close=False)
