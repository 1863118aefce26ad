"""The servers under test: a starlingpy we start, and the Redis already running.

A *peer* is what a scenario needs from a server: its address, its pid (for
``/proc``), its wire, the queue the benchmark uses, and two control calls
over a plain blocking socket: how many items are queued, and empty the queue.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

from bench.wire import MemcacheWire, RespWire
from starlingpy.client.queue_stats import queue_items, request_stats

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
DEFAULT_SERVER_COMMAND = (sys.executable, "-m", "starlingpy", "serve")


class ControlConnection:
    """A blocking socket for the few unmeasured calls (stats, LLEN, delete)."""

    def __init__(self, address: tuple[str, int], timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = bytearray()

    def call_until(self, request: bytes, terminator: bytes) -> bytes:
        """Send ``request``; return the reply up to and including ``terminator``."""
        self.sock.sendall(request)
        while (end := self.buffer.find(terminator)) < 0:
            self._receive()
        end += len(terminator)
        reply = bytes(self.buffer[:end])
        del self.buffer[:end]
        return reply

    def call_scanned(self, request: bytes, scan) -> bytes:
        """Send ``request``; return one reply as delimited by a wire's ``scan``."""
        self.sock.sendall(request)
        while (found := scan(self.buffer, 0)) is None:
            self._receive()
        reply = bytes(self.buffer[:found[0]])
        del self.buffer[:found[0]]
        return reply

    def _receive(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError(f"server closed the connection; had {bytes(self.buffer[:200])!r}")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisPeer:
    """Redis on ``address``, one list as the queue (RPUSH / LPOP)."""

    name = "redis"
    wire = RespWire

    def __init__(self, address: tuple[str, int] = ("127.0.0.1", 6379)) -> None:
        self.address = address
        # Our own key, so that anyone else using this Redis is left alone.
        self.queue = b"starlingpy-bench:%d" % os.getpid()
        with ControlConnection(address) as control:
            info = control.call_scanned(RespWire.command(b"INFO", b"server"), RespWire.scan)
        match = re.search(rb"process_id:(\d+)", info)
        if not match:
            raise RuntimeError("Redis INFO server gave no process_id")
        self.pid = int(match.group(1))
        version = re.search(rb"redis_version:(\S+)", info)
        self.version = version.group(1).decode() if version else "?"

    def depth(self) -> int:
        with ControlConnection(self.address) as control:
            reply = control.call_scanned(RespWire.command(b"LLEN", self.queue), RespWire.scan)
        return int(reply[1:-2])

    def clear(self) -> None:
        with ControlConnection(self.address) as control:
            control.call_scanned(RespWire.command(b"DEL", self.queue), RespWire.scan)


class StarlingpyServer:
    """``starlingpy serve`` as a child process on a free port.

    ``start()`` returns once the server printed ``listening on HOST:PORT``
    (it does so after loading its journals); the rest of its output is
    drained by a thread so the pipe never fills.
    """

    def __init__(self, queue_dir: Path, *extra_args: str, host: str = "127.0.0.1",
                 command: tuple[str, ...] = DEFAULT_SERVER_COMMAND) -> None:
        self.queue_dir = Path(queue_dir)
        self.extra_args = extra_args
        self.host = host
        self.command = command
        self.proc: subprocess.Popen | None = None
        self.address: tuple[str, int] | None = None
        self.output = bytearray()
        self.started_at = 0.0    # perf_counter just before the process was spawned
        self.listening_at = 0.0  # perf_counter when its "listening on" line was read

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> StarlingpyServer:
        cmd = [*self.command, "-h", self.host, "-p", "0", "-q", str(self.queue_dir), *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.output = bytearray()
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=REPO, env=env)
        self.address = self._wait_listening(timeout)
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        return self

    def _wait_listening(self, timeout: float) -> tuple[str, int]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                match = _LISTENING.search(self.output)
                if match:
                    self.listening_at = time.perf_counter()
                    return match.group(1).decode(), int(match.group(2))
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise RuntimeError(f"server not listening after {timeout}s: {self.log_tail()}")
                if selector.select(left):
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        self.proc.wait(timeout=10)
                        raise RuntimeError(f"server exited ({self.proc.returncode}): {self.log_tail()}")
                    self.output += chunk

    def _drain(self, stream) -> None:
        for chunk in iter(lambda: stream.read1(1 << 16), b""):
            self.output += chunk
            del self.output[:-(1 << 20)]  # keep the last MiB for error messages

    def log_tail(self, size: int = 2000) -> str:
        return bytes(self.output[-size:]).decode(errors="replace")

    def terminate(self, timeout: float = 120.0) -> int:
        """SIGTERM and wait for the exit code (the graceful stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


class StarlingpyPeer:
    """A started ``StarlingpyServer`` and the queue the benchmark uses on it."""

    name = "starlingpy"
    wire = MemcacheWire

    def __init__(self, server: StarlingpyServer, queue: bytes = b"bench") -> None:
        assert server.address is not None, "start the server first"
        self.server = server
        self.address = server.address
        self.pid = server.pid
        self.queue = queue

    def depth(self) -> int:
        with ControlConnection(self.address) as control:
            stats = request_stats(control.sock)
        return queue_items(stats).get(self.queue.decode(), 0)

    def clear(self) -> None:
        with ControlConnection(self.address) as control:
            control.call_until(b"delete %s\r\n" % self.queue, b"\r\n")


# Ruby Starling 0.10.1, unpatched, kept beside the repository as
# ../shared/peers/starling (see its PEER.md); a git worktree one level
# deeper finds it one level up.
STARLING_HOME = next((parent / "shared" / "peers" / "starling" for parent in REPO.parents
                      if (parent / "shared" / "peers" / "starling").is_dir()),
                     REPO.parent / "shared" / "peers" / "starling")


def starling_missing() -> str | None:
    """Why Ruby Starling cannot run here ("not installed"), or None."""
    if not (STARLING_HOME / "bin" / "starling").exists() or shutil.which("ruby") is None:
        return "not installed"
    probe = subprocess.run(["ruby", "-e", "require 'eventmachine'"], capture_output=True)
    return "not installed" if probe.returncode else None


class RubyStarlingServer(StarlingpyServer):
    """Ruby Starling as a child process. It prints nothing when it listens:
    it gets a free port picked here and is ready once that port accepts."""

    def start(self, timeout: float = 120.0) -> RubyStarlingServer:
        with socket.socket() as probe:  # a free port, released for Starling to take
            probe.bind((self.host, 0))
            port = probe.getsockname()[1]
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        cmd = ["ruby", "-I", str(STARLING_HOME / "lib"), str(STARLING_HOME / "bin" / "starling"),
               "-h", self.host, "-p", str(port), "-q", str(self.queue_dir),
               "-P", str(self.queue_dir / "starling.pid"), "-L", str(self.queue_dir / "log")]
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, cwd=self.queue_dir)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((self.host, port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"Ruby Starling exited ({self.proc.returncode})") from None
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"Ruby Starling not listening after {timeout}s") from None
                time.sleep(0.05)  # polling interval; the condition is the port accepting
        self.listening_at = time.perf_counter()
        self.address = (self.host, port)
        return self


class RubyStarlingPeer(StarlingpyPeer):
    """Ruby Starling speaks the same protocol, so the starlingpy peer's calls serve."""

    name = "starling"
