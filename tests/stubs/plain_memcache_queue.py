"""A minimal plain-memcache queue server, the way Ruby Starling 0.10 was.

It speaks ``set``, ``get``, ``delete``, ``stats``, ``version`` and ``quit``
and nothing else: no ``/t=``, ``/open``, ``/peek`` or ``a|b`` (a key is
just a queue name, so ``get q/t=10`` reads a queue literally called
``q/t=10``), no ``flush``. Like Starling it answers every item with flags 0
(``keep_flags=True`` stores them instead) and says ``VERSION 0.10.1``.

It serves real loopback sockets from a thread, for the client's fallback
tests; ``python tests/stubs/plain_memcache_queue.py PORT`` runs it alone.
"""

from __future__ import annotations

import collections
import socketserver
import sys
import threading
import time


class _Queues:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[bytes, collections.deque] = {}
        self.total: collections.Counter = collections.Counter()
        self.gets = 0  # every get command, so tests can see polling happen
        self.versions = 0  # every version command (capability detection)


class _Handler(socketserver.StreamRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        queues = self.server.queues
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            parts = line.split()
            if not parts:
                self._reply(b"ERROR")
                continue
            command, args = parts[0], parts[1:]
            if command == b"set" and len(args) >= 4:
                size = int(args[3])
                data = self.rfile.read(size + 2)[:size]
                flags = int(args[1]) if self.server.keep_flags else 0
                with queues.lock:
                    queues.items.setdefault(args[0], collections.deque()).append((flags, data))
                    queues.total[args[0]] += 1
                self._reply(b"STORED")
            elif command == b"get" and len(args) == 1:
                with queues.lock:
                    queues.gets += 1
                    queue = queues.items.get(args[0])
                    item = queue.popleft() if queue else None
                if item is None:
                    self._reply(b"END")
                else:
                    flags, data = item
                    self._reply(b"VALUE %s %d %d\r\n%s\r\nEND" % (args[0], flags, len(data), data))
            elif command == b"delete" and args:
                with queues.lock:
                    found = queues.items.pop(args[0], None) is not None
                self._reply(b"DELETED" if found else b"NOT_FOUND")
            elif command == b"stats":
                self._reply(self._stats())
            elif command == b"version":
                with queues.lock:
                    queues.versions += 1
                self._reply(b"VERSION 0.10.1")
            elif command == b"quit":
                return
            else:
                self._reply(b"ERROR")

    def _stats(self) -> bytes:
        queues = self.server.queues
        lines = [b"STAT pid 1", b"STAT uptime %d" % int(time.time() - self.server.started),
                 b"STAT version 0.10.1"]
        with queues.lock:
            for name, items in queues.items.items():
                size = sum(len(data) for _, data in items)
                lines += [b"STAT queue_%s_items %d" % (name, len(items)),
                          b"STAT queue_%s_total_items %d" % (name, queues.total[name]),
                          b"STAT queue_%s_logsize %d" % (name, size),
                          b"STAT queue_%s_expired_items 0" % name,
                          b"STAT queue_%s_age 0" % name]
        return b"\r\n".join(lines + [b"END"])

    def _reply(self, data: bytes) -> None:
        self.wfile.write(data + b"\r\n")
        self.wfile.flush()


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class PlainMemcacheQueue:
    """The stub on ``127.0.0.1:port`` (0: a free one); a context manager."""

    def __init__(self, port: int = 0, *, keep_flags: bool = False) -> None:
        self._server = _TCPServer(("127.0.0.1", port), _Handler)
        self._server.queues = _Queues()
        self._server.keep_flags = keep_flags
        self._server.started = time.time()
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def get_count(self) -> int:
        return self._server.queues.gets

    @property
    def version_count(self) -> int:
        return self._server.queues.versions

    def start(self) -> PlainMemcacheQueue:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> PlainMemcacheQueue:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    stub = PlainMemcacheQueue(int(sys.argv[1]) if len(sys.argv) > 1 else 22122).start()
    print(f"listening on {stub.address}", flush=True)
    threading.Event().wait()
