"""Fixtures for the worker tests: a real starlingpy server subprocess, a
client on it, and the plain-memcache stub for the polling fallback."""

from __future__ import annotations

import pytest

from starlingpy.client import Client
from tests.stubs.plain_memcache_queue import PlainMemcacheQueue
from tests.support import ServerProcess


@pytest.fixture
def server(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    with ServerProcess(spool) as proc:
        yield proc


@pytest.fixture
def client(server):
    c = Client([server.address], timeout=5.0)
    yield c
    c.close()


@pytest.fixture
def marks(tmp_path, monkeypatch):
    """Where sample tasks leave their marker files (in this process too)."""
    from tests.worker import sample_tasks

    path = tmp_path / "marks"
    path.mkdir()
    monkeypatch.setattr(sample_tasks, "MARKS", path)
    return path


@pytest.fixture
def tasks(client):
    """The sample task set, pushing through the test's client."""
    from tests.worker import sample_tasks

    sample_tasks.tasks.client_factory = lambda: client
    sample_tasks.tasks._client = None
    yield sample_tasks.tasks
    sample_tasks.tasks.client_factory = None
    sample_tasks.tasks._client = None


@pytest.fixture
def plain_server():
    with PlainMemcacheQueue() as stub:
        yield stub


@pytest.fixture
def plain_client(plain_server):
    """A client on the plain-memcache stub: no reliable reads, so polling."""
    c = Client([plain_server.address])
    yield c
    c.close()
