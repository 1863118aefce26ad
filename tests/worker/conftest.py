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
def plain_server():
    with PlainMemcacheQueue() as stub:
        yield stub


@pytest.fixture
def plain_client(plain_server):
    """A client on the plain-memcache stub: no reliable reads, so polling."""
    c = Client([plain_server.address])
    yield c
    c.close()
