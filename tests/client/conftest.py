"""Fixtures for the client tests: real servers and stubs on loopback."""

from __future__ import annotations

import itertools
import socket

import pytest

from starlingpy.client import Client
from tests.stubs.plain_memcache_queue import PlainMemcacheQueue
from tests.support import ServerProcess

# A queue that holds at most 2 items (for NotStored); with --max-item-size 1024
# below (for SERVER_ERROR object too large) neither test needs big data.
SERVER_CONFIG = """
[queues."tiny"]
max_items = 2
"""

_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One starlingpy server shared by a test module; tests use distinct queues."""
    root = tmp_path_factory.mktemp("server")
    (root / "starlingpy.toml").write_text(SERVER_CONFIG)
    with ServerProcess(root / "spool", "-f", str(root / "starlingpy.toml"),
                       "--max-item-size", "1024") as proc:
        yield proc


@pytest.fixture
def queue(request):
    """A queue name no other test uses."""
    return f"q{next(_names)}_{request.node.name[:40]}".replace("[", "_").replace("]", "_")


@pytest.fixture
def make_client():
    """``make_client(addresses, **options)``: Clients closed after the test.
    Short timeouts and back-off keep failure tests fast."""
    clients = []

    def make(addresses, **options):
        options.setdefault("connect_timeout", 2.0)
        options.setdefault("timeout", 5.0)
        options.setdefault("dead_retry", 0.2)
        client = Client(addresses, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(server, make_client):
    return make_client([server.address])


@pytest.fixture
def stub():
    with PlainMemcacheQueue() as plain:
        yield plain


@pytest.fixture
def silent_listener():
    """A socket that accepts connections (via the backlog) and never reads."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
