"""The workloads, run the same way against any peer.

Every scenario is bounded twice: by an operation count and by a time limit.
The server's CPU is read from ``/proc`` just before and just after the load,
so set-up work (filling a queue for the get scenarios) is never counted.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import re
from pathlib import Path

from bench import procstat
from bench.loadgen import LoadResult, fill, run_load
from bench.peers import StarlingpyPeer, StarlingpyServer
from bench.profile import Sampler

VALUE = (b"0123456789" * 10)  # 100 bytes
CONNECTIONS = 8
PIPELINE_DEPTH = 32
MIXED_BACKLOG = 1000  # items queued before the mixed run, so its gets find work

SCENARIOS = ("set", "get", "mixed", "pipelined set", "pipelined get")
SYNC_POLICIES = ("never", "always")
SYNC_ROUNDS = 4  # alternations between the sync-never and sync-always servers


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each part of the benchmark does."""

    ops: int              # per request/reply scenario
    pipelined_ops: int    # per pipelined scenario (cheap per op: more ops for tick resolution)
    time_limit: float     # seconds, per scenario
    sync_ops: int         # per sync-policy run
    replay_items: int     # items loaded for the replay measurement
    load_time_limit: float


FULL = Sizes(ops=100_000, pipelined_ops=300_000, time_limit=15.0, sync_ops=100_000,
             replay_items=1_000_000, load_time_limit=150.0)
QUICK = Sizes(ops=2_000, pipelined_ops=6_000, time_limit=2.0, sync_ops=1_000,
              replay_items=20_000, load_time_limit=20.0)


@dataclasses.dataclass
class Measurement:
    """One scenario on one system: client-side figures plus the server's CPU."""

    scenario: str
    system: str
    connections: int
    depth: int
    ops: int
    elapsed: float
    ops_per_second: float
    p50_us: float
    p99_us: float
    server_cpu_seconds: float
    server_system_share: float    # of the server's CPU, the part spent in the kernel
    server_busy: float            # server CPU seconds per second: near 1.0 = CPU-bound
    cpu_per_100k: float
    client_cpu_seconds: float
    replies: dict
    timed_out: bool


@dataclasses.dataclass
class _Run:
    """One load and the server CPU it cost (user, system seconds)."""

    load: LoadResult
    user: float
    system: float


def _run(peer, scenario: str, pattern: list[bytes], depth: int, ops: int, time_limit: float,
         profile_dir: Path | None) -> _Run:
    sampler = None
    if profile_dir is not None:
        sampler = Sampler(peer.pid, profile_dir / (re.sub(r"\W+", "_", f"{peer.name} {scenario}") + ".txt"))
        sampler.start()
    try:
        user_before, system_before = procstat.cpu_times(peer.pid)
        load = run_load(peer.address, peer.wire, pattern, connections=CONNECTIONS, depth=depth,
                        total_ops=ops, time_limit=time_limit)
        user_after, system_after = procstat.cpu_times(peer.pid)
    finally:
        if sampler is not None:
            sampler.stop()
    return _Run(load, user_after - user_before, system_after - system_before)


def _measurement(peer, scenario: str, depth: int, runs: list[_Run]) -> Measurement:
    """The figures of one or more runs of the same load, taken together."""
    ops = sum(run.load.ops for run in runs)
    elapsed = sum(run.load.elapsed for run in runs)
    system = sum(run.system for run in runs)
    server_cpu = sum(run.user for run in runs) + system
    together = LoadResult(ops=ops, elapsed=elapsed,
                          latencies=[x for run in runs for x in run.load.latencies],
                          kinds=sum((run.load.kinds for run in runs), collections.Counter()),
                          client_cpu=sum(run.load.client_cpu for run in runs),
                          timed_out=any(run.load.timed_out for run in runs))
    return Measurement(
        scenario=scenario, system=peer.name, connections=CONNECTIONS, depth=depth,
        ops=ops, elapsed=elapsed, ops_per_second=together.ops_per_second,
        p50_us=together.percentile_us(0.50), p99_us=together.percentile_us(0.99),
        server_cpu_seconds=server_cpu, server_system_share=system / server_cpu if server_cpu else 0.0,
        server_busy=server_cpu / elapsed if elapsed else 0.0,
        cpu_per_100k=server_cpu / ops * 100_000 if ops else math.nan,
        client_cpu_seconds=together.client_cpu, replies=dict(together.kinds),
        timed_out=together.timed_out)


def measure(peer, scenario: str, pattern: list[bytes], *, depth: int, ops: int,
            time_limit: float, profile_dir: Path | None = None) -> Measurement:
    """Run one load against ``peer`` and read its CPU time around it.

    With ``profile_dir``, py-spy samples the server meanwhile (see ``bench.profile``).
    """
    run = _run(peer, scenario, pattern, depth, ops, time_limit, profile_dir)
    return _measurement(peer, scenario, depth, [run])


def top_up(peer, count: int, time_limit: float) -> None:
    """Make sure at least ``count`` items wait in the peer's queue."""
    missing = count - peer.depth()
    fill(peer.address, peer.wire, peer.queue, VALUE, missing, time_limit=time_limit)


def run_scenarios(peer, sizes: Sizes, profile_dir: Path | None = None) -> list[Measurement]:
    """set, get (draining), mixed, pipelined set, pipelined get, in that order."""
    set_request = peer.wire.set_request(peer.queue, VALUE)
    get_request = peer.wire.get_request(peer.queue)
    limit, fill_limit = sizes.time_limit, sizes.load_time_limit
    results = []
    peer.clear()
    results.append(measure(peer, "set", [set_request], depth=1, ops=sizes.ops, time_limit=limit,
                           profile_dir=profile_dir))
    top_up(peer, sizes.ops, fill_limit)
    results.append(measure(peer, "get", [get_request], depth=1, ops=sizes.ops, time_limit=limit,
                           profile_dir=profile_dir))
    peer.clear()
    top_up(peer, MIXED_BACKLOG, fill_limit)
    results.append(measure(peer, "mixed", [set_request, get_request], depth=1, ops=sizes.ops,
                           time_limit=limit, profile_dir=profile_dir))
    peer.clear()
    results.append(measure(peer, "pipelined set", [set_request], depth=PIPELINE_DEPTH,
                           ops=sizes.pipelined_ops, time_limit=limit, profile_dir=profile_dir))
    top_up(peer, sizes.pipelined_ops, fill_limit)
    results.append(measure(peer, "pipelined get", [get_request], depth=PIPELINE_DEPTH,
                           ops=sizes.pipelined_ops, time_limit=limit, profile_dir=profile_dir))
    peer.clear()
    return results


def run_sync_policies(spool: Path, sizes: Sizes, command: tuple[str, ...],
                      profile_dir: Path | None = None) -> dict[str, Measurement]:
    """Plain set throughput under ``--sync never`` and ``--sync always``.

    Two servers run side by side and the load alternates between them in
    ``SYNC_ROUNDS`` rounds, so a change in what else the machine is doing
    weighs on both policies alike instead of skewing their ratio.
    """
    with contextlib.ExitStack() as stack:
        peers = {}
        for policy in SYNC_POLICIES:
            server = stack.enter_context(
                StarlingpyServer(spool / f"sync-{policy}", "--sync", policy, command=command))
            peers[policy] = StarlingpyPeer(server)
        runs: dict[str, list[_Run]] = {policy: [] for policy in SYNC_POLICIES}
        for _ in range(SYNC_ROUNDS):
            for policy, peer in peers.items():
                pattern = [peer.wire.set_request(peer.queue, VALUE)]
                runs[policy].append(_run(peer, f"set, sync {policy}", pattern, 1,
                                         sizes.sync_ops // SYNC_ROUNDS, sizes.time_limit / SYNC_ROUNDS,
                                         profile_dir))
        return {policy: _measurement(peers[policy], f"set, sync {policy}", 1, runs[policy])
                for policy in SYNC_POLICIES}
