"""An in-process server on a real loopback port, and a raw-bytes client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from starlingpy.journal import SyncPolicy
from starlingpy.journal.store import JournalStore
from starlingpy.tcp import QueueServer


class RawClient:
    """Speaks bytes to the server; reads replies up to a known terminator."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read_until(self, terminator: bytes, timeout: float = 10) -> bytes:
        with trio.fail_after(timeout):
            while terminator not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise EOFError(bytes(self.buffer))
                self.buffer += chunk
        end = self.buffer.index(terminator) + len(terminator)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    async def read_exactly(self, size: int, timeout: float = 10) -> bytes:
        with trio.fail_after(timeout):
            while len(self.buffer) < size:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise EOFError(bytes(self.buffer))
                self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def call(self, line: bytes, terminator: bytes = b"\r\n") -> bytes:
        await self.send(line)
        return await self.read_until(terminator)

    async def read_eof(self, timeout: float = 10) -> bytes:
        """Everything until the server closes the connection."""
        with trio.fail_after(timeout):
            while True:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    data = bytes(self.buffer)
                    self.buffer.clear()
                    return data
                self.buffer += chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


@dataclass
class RunningServer:
    server: QueueServer
    collection: JournalStore
    host: str
    port: int
    directory: Path

    async def connect(self) -> RawClient:
        return RawClient(await trio.open_tcp_stream(self.host, self.port))


async def start_server(nursery: trio.Nursery, directory: Path, **options) -> RunningServer:
    sync = options.pop("sync", "never")
    collection = JournalStore.open(directory, sync=SyncPolicy.parse(sync))
    server = QueueServer(collection, **options)

    async def serve_then_close(task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            await server.serve("127.0.0.1", 0, task_status=task_status)
        finally:
            collection.close()

    host, port = await nursery.start(serve_then_close)
    return RunningServer(server, collection, host, port, directory)


@pytest.fixture
async def running(nursery, tmp_path) -> RunningServer:
    running = await start_server(nursery, tmp_path / "spool")
    yield running
    running.server.request_shutdown()


@pytest.fixture
async def client(running) -> RawClient:
    c = await running.connect()
    yield c
    await c.aclose()
