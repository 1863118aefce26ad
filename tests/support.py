"""Test support shared by every test module: a real server as a subprocess,
and waiting for a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(rb"listening on (\S+):(\d+)")


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
               message: str = "condition") -> object:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class ServerProcess:
    """``starlingpy serve`` in a subprocess on a free port.

    It prints ``listening on HOST:PORT`` once journals are loaded and the
    socket is bound; we wait for that line (with a deadline) and keep draining
    its output in a thread so the pipe never fills.
    """

    def __init__(self, queue_dir: Path | str, *extra_args: str, host: str = "127.0.0.1",
                 port: int = 0, env: dict | None = None) -> None:
        self.queue_dir = Path(queue_dir)
        self.extra_args = list(extra_args)
        self.host = host
        self.requested_port = port
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.output = bytearray()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        port = self.port if self.port is not None else self.requested_port
        cmd = [sys.executable, "-m", "starlingpy", "serve", "-h", self.host, "-p", str(port),
               "-q", str(self.queue_dir), *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        self.output = bytearray()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=env)
        bound = threading.Event()

        def drain(stream=self.proc.stdout) -> None:
            for line in iter(stream.readline, b""):
                self.output += line
                match = _LISTENING.search(line)
                if match and not bound.is_set():
                    self.port = int(match.group(2))
                    bound.set()
            bound.set()  # EOF: let start() notice the process died

        threading.Thread(target=drain, daemon=True).start()
        if not bound.wait(timeout) or self.port is None or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"server did not start: {bytes(self.output).decode(errors='replace')}")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def restart(self) -> ServerProcess:
        """Start again on the same port and directory (after kill/terminate)."""
        return self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


class BlockingClient:
    """A plain blocking socket speaking raw protocol bytes (for subprocess tests)."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        import socket

        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buffer = bytearray()

    def call(self, data: bytes, terminator: bytes = b"\r\n") -> bytes:
        self.sock.sendall(data)
        return self.read_until(terminator)

    def read_until(self, terminator: bytes) -> bytes:
        while terminator not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(bytes(self.buffer))
            self.buffer += chunk
        end = self.buffer.index(terminator) + len(terminator)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    def set(self, queue: bytes, data: bytes) -> bytes:
        return self.call(b"set %s 0 0 %d\r\n%s\r\n" % (queue, len(data), data))

    def get(self, key: bytes) -> bytes | None:
        """The item's data, or None for an empty queue."""
        reply = self.call(b"get %s\r\n" % key, b"END\r\n")
        if reply == b"END\r\n":
            return None
        header, _, rest = reply.partition(b"\r\n")
        size = int(header.split()[3])
        return rest[:size]

    def drain(self, queue: bytes) -> list[bytes]:
        items = []
        while (item := self.get(queue)) is not None:
            items.append(item)
        return items

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
