"""A cheap load generator: many connections multiplexed in one thread.

The machine has two cores; the server under test must get one of them. So
there are no threads and no asyncio here: non-blocking sockets, one
``selectors`` loop, requests built once and re-sent as bytes, and replies
scanned in place. Each connection keeps ``depth`` requests in flight (1: a
plain request/reply client; 32: pipelined) and issues a new one as each reply
arrives, until it has done its share of ``total_ops`` or the time limit
passes; then what is in flight is drained.

Latency is measured per operation from the moment its request was handed to
the kernel to the moment the read carrying its reply returned.
"""

from __future__ import annotations

import collections
import dataclasses
import selectors
import socket
import time
from collections.abc import Sequence

from bench.wire import KIND_NAMES

RECV_SIZE = 1 << 18
DRAIN_SECONDS = 10.0  # replies still owed after the time limit


@dataclasses.dataclass
class LoadResult:
    """What one run did, as measured on the client side."""

    ops: int                      # replies received
    elapsed: float                # seconds from first send to last reply
    latencies: list[float]        # seconds, one per reply
    kinds: collections.Counter    # reply kind name -> count
    client_cpu: float             # this process's CPU seconds during the run
    timed_out: bool               # the time limit cut the run short

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0

    def percentile_us(self, fraction: float) -> float:
        """Latency at ``fraction`` (0..1) in microseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index] * 1e6


class _Connection:
    __slots__ = ("inbuf", "next_index", "outbuf", "pattern", "sent_at", "sock", "to_issue")

    def __init__(self, sock: socket.socket, pattern: Sequence[bytes], ops: int, offset: int) -> None:
        self.sock = sock
        self.pattern = pattern
        self.next_index = offset        # position in the request pattern
        self.to_issue = ops             # requests not yet issued
        self.sent_at: collections.deque[float] = collections.deque()
        self.inbuf = bytearray()
        self.outbuf = b""

    def issue(self, count: int, now: float) -> None:
        """Queue ``count`` more requests (fewer if its share is nearly done)."""
        count = min(count, self.to_issue)
        if count <= 0:
            return
        pattern, n, start = self.pattern, len(self.pattern), self.next_index
        if n == 1:
            batch = pattern[0] * count
        else:
            batch = b"".join(pattern[(start + i) % n] for i in range(count))
        self.next_index = (start + count) % n
        self.to_issue -= count
        self.sent_at.extend([now] * count)
        self.outbuf = self.outbuf + batch if self.outbuf else batch

    def receive(self, scan, counts: list[int], latencies: list[float]) -> tuple[int, float]:
        """Read what arrived and account for every complete reply in it.

        Returns how many replies completed, and when they were read.
        """
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return 0, 0.0
        if not data:
            raise ConnectionError("server closed a benchmark connection")
        now = time.perf_counter()
        buf, sent_at = self.inbuf, self.sent_at
        buf += data
        pos = done = 0
        while (reply := scan(buf, pos)) is not None:
            pos, kind = reply
            counts[kind] += 1
            latencies.append(now - sent_at.popleft())
            done += 1
        if pos:
            del buf[:pos]
        return done, now

    def flush(self) -> bool:
        """Send what we can; True when everything queued has been sent."""
        if self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except BlockingIOError:
                return False
            self.outbuf = self.outbuf[sent:]
        return not self.outbuf


def open_connections(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` connected, non-blocking, Nagle-free sockets."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def run_load(address: tuple[str, int], wire, pattern: Sequence[bytes], *, connections: int = 8,
             depth: int = 1, total_ops: int, time_limit: float) -> LoadResult:
    """Drive ``address`` with ``connections`` clients cycling through ``pattern``.

    ``total_ops`` is split evenly over the connections; connection ``i``
    starts at pattern position ``i`` so a mixed pattern is mixed across
    connections at every moment. The run stops issuing at ``time_limit``
    seconds and then waits (bounded) for the replies still owed.
    """
    socks = open_connections(address, connections)
    share, extra = divmod(total_ops, connections)
    conns = [_Connection(sock, pattern, share + (1 if i < extra else 0), i % len(pattern))
             for i, sock in enumerate(socks)]
    selector = selectors.DefaultSelector()
    latencies: list[float] = []
    counts = [0, 0, 0, 0]
    scan = wire.scan
    cpu_before = time.process_time()
    start = time.perf_counter()
    deadline = start + time_limit
    timed_out = False
    last_reply = start
    try:
        pending = 0
        for conn in conns:
            if not conn.to_issue:
                continue  # fewer operations than connections: this one stays idle
            conn.issue(depth, time.perf_counter())
            everything_sent = conn.flush()
            wanted = selectors.EVENT_READ | (0 if everything_sent else selectors.EVENT_WRITE)
            selector.register(conn.sock, wanted, conn)
            pending += 1
        issuing = True
        hard_deadline = deadline + DRAIN_SECONDS
        while pending:
            now = time.perf_counter()
            if issuing and now >= deadline:
                issuing = False
                timed_out = any(conn.to_issue for conn in conns)
                for conn in conns:
                    conn.to_issue = 0  # stop issuing; drain what is in flight
                    if not conn.sent_at and conn.sock in selector.get_map():
                        selector.unregister(conn.sock)
                        pending -= 1
                continue
            if now >= hard_deadline:
                raise TimeoutError(f"{sum(len(c.sent_at) for c in conns)} replies never arrived")
            events = selector.select((deadline if issuing else hard_deadline) - now)
            for key, mask in events:
                conn = key.data
                if mask & selectors.EVENT_READ:
                    done, now = conn.receive(scan, counts, latencies)
                    if done:
                        last_reply = now
                        conn.issue(done, time.perf_counter())
                        if not conn.sent_at and not conn.to_issue:
                            selector.unregister(conn.sock)
                            pending -= 1
                            continue
                if conn.outbuf or mask & selectors.EVENT_WRITE:
                    everything_sent = conn.flush()
                    wanted = selectors.EVENT_READ | (0 if everything_sent else selectors.EVENT_WRITE)
                    if key.events != wanted:
                        selector.modify(conn.sock, wanted, conn)
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    kinds = collections.Counter({KIND_NAMES[i]: n for i, n in enumerate(counts) if n})
    return LoadResult(ops=len(latencies), elapsed=last_reply - start, latencies=latencies,
                      kinds=kinds, client_cpu=time.process_time() - cpu_before, timed_out=timed_out)


def fill(address: tuple[str, int], wire, queue: bytes, value: bytes, count: int,
         time_limit: float = 120.0) -> LoadResult:
    """Enqueue ``count`` items as fast as possible (pipelined), unmeasured set-up."""
    if count <= 0:
        return LoadResult(0, 0.0, [], collections.Counter(), 0.0, False)
    result = run_load(address, wire, [wire.set_request(queue, value)], connections=8, depth=32,
                      total_ops=count, time_limit=time_limit)
    if result.kinds.get("error"):
        raise RuntimeError(f"fill of {queue!r} got {result.kinds['error']} error replies")
    return result

