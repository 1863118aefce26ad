"""Fairness: the latency of a client that waits for each reply while another
client pipelines as fast as it can, on the same server.

The pipelining client runs in its own process (so the two do not share one
interpreter), with 32 sets in flight for the whole measurement; the waiting
client makes ``ops`` plain sets, one at a time. What counts is its p99: one
busy client must not make the others wait.

    python -m bench.fairness --pipeline HOST PORT WIRE QUEUE SECONDS   # the pipeliner
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.loadgen import LoadResult, run_load
from bench.wire import MemcacheWire, RespWire

WIRES = {"memcache": MemcacheWire, "resp": RespWire}
PIPELINE_DEPTH = 32
START_TIMEOUT = 30.0


def measure_fairness(peer, value: bytes, ops: int, time_limit: float) -> LoadResult:
    """The waiting client's figures while another pipelines sets on ``peer``."""
    wire_name = next(name for name, wire in WIRES.items() if wire is peer.wire)
    pipeliner = subprocess.Popen(
        [sys.executable, "-m", "bench.fairness", "--pipeline", peer.address[0],
         str(peer.address[1]), wire_name, peer.queue.decode(), str(time_limit + 5)],
        stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while peer.depth() < 1000:  # the pipeliner is going
            if pipeliner.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the pipelining client did not get going")
            time.sleep(0.01)  # polling interval; the condition is the queue growing
        return run_load(peer.address, peer.wire, [peer.wire.set_request(peer.queue, value)],
                        connections=1, depth=1, total_ops=ops, time_limit=time_limit)
    finally:
        pipeliner.kill()
        pipeliner.wait()
        peer.clear()


def _pipeline(host: str, port: str, wire_name: str, queue: str, seconds: str) -> None:
    wire = WIRES[wire_name]
    run_load((host, int(port)), wire, [wire.set_request(queue.encode(), b"p" * 100)],
             connections=1, depth=PIPELINE_DEPTH, total_ops=10**9, time_limit=float(seconds))


if __name__ == "__main__":
    if sys.argv[1:2] != ["--pipeline"]:
        sys.exit(__doc__)
    _pipeline(*sys.argv[2:7])
