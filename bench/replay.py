"""Journal replay: how long a restarted server takes to serve its first item.

Load ``items`` 100-byte items (pipelined, acknowledged), read the server's
RSS, stop it with SIGTERM, start it again and time from spawning the process
to the first successful ``get`` reply; then the same after SIGKILL. Each
restart takes one item, so the queue depth after it is checked too. For
scale, the same start-up is timed on an empty spool (interpreter, imports,
binding: the floor under any replay figure).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

from bench import procstat
from bench.loadgen import fill
from bench.peers import ControlConnection, StarlingpyPeer, StarlingpyServer
from bench.scenarios import VALUE

QUEUE = b"replay"
REPEATS = 3  # restarts of each kind; the median is reported


@dataclasses.dataclass
class Restart:
    """One restart of a loaded server."""

    after: str                  # "SIGTERM" or "SIGKILL": how the previous run ended
    previous_exit_code: int
    to_listening: float         # seconds, spawn -> "listening on" line
    to_first_get: float         # seconds, spawn -> first get reply with an item
    rss_bytes: int              # after the first get
    items_after: int            # queue depth after that get


@dataclasses.dataclass
class ReplayResult:
    items: int                  # items acknowledged by the load
    load_seconds: float
    rss_loaded_bytes: int       # the server that took the load, live
    empty_starts: list[float]   # seconds, spawn -> first get, empty spool
    restarts: list[Restart]     # REPEATS after SIGTERM, then REPEATS after SIGKILL

    @property
    def empty_start_to_first_get(self) -> float:
        return statistics.median(self.empty_starts)

    def median_to_first_get(self, after: str) -> float:
        return statistics.median(r.to_first_get for r in self.restarts if r.after == after)


def first_get(server: StarlingpyServer, queue: bytes, timeout: float = 120.0) -> bytes:
    """The first ``get`` reply from a just-started server (the socket timeout bounds it)."""
    with ControlConnection(server.address, timeout=timeout) as control:
        return control.call_until(b"get %s\r\n" % queue, b"END\r\n")


def _depth(server: StarlingpyServer) -> int:
    return StarlingpyPeer(server, QUEUE).depth()


def _restart(server: StarlingpyServer, after: str, exit_code: int) -> Restart:
    server.start()
    reply = first_get(server, QUEUE)
    got_item_at = time.perf_counter()
    if not reply.startswith(b"VALUE "):
        raise RuntimeError(f"after {after} the first get found no item: {reply[:100]!r}")
    return Restart(after=after, previous_exit_code=exit_code,
                   to_listening=server.listening_at - server.started_at,
                   to_first_get=got_item_at - server.started_at,
                   rss_bytes=procstat.rss_bytes(server.pid), items_after=_depth(server))


def empty_start(spool: Path, command: tuple[str, ...]) -> float:
    """Seconds from spawn to the first ``get`` reply on an empty spool."""
    with StarlingpyServer(spool, command=command) as server:
        first_get(server, QUEUE)
        return time.perf_counter() - server.started_at


def measure_replay(spool: Path, items: int, command: tuple[str, ...],
                   load_time_limit: float) -> ReplayResult:
    """Load, then SIGTERM + restart and SIGKILL + restart, each ``REPEATS`` times.

    Start-up times swing with what else the shared machine is doing, so each
    is taken a few times and the table shows the median.
    """
    empty_starts = [empty_start(spool / f"empty-{i}", command) for i in range(REPEATS)]
    server = StarlingpyServer(spool / "replay", command=command).start()
    try:
        started = time.perf_counter()
        load = fill(server.address, StarlingpyPeer.wire, QUEUE, VALUE, items,
                    time_limit=load_time_limit)
        load_seconds = time.perf_counter() - started
        loaded = _depth(server)
        rss_loaded = procstat.rss_bytes(server.pid)
        restarts = []
        for _ in range(REPEATS):
            restarts.append(_restart(server, "SIGTERM", server.terminate()))
        for _ in range(REPEATS):
            server.kill()
            restarts.append(_restart(server, "SIGKILL", -9))
    finally:
        server.kill()
    if loaded != load.kinds.get("stored", 0):
        raise RuntimeError(f"{load.kinds.get('stored', 0)} sets acknowledged but {loaded} queued")
    return ReplayResult(items=loaded, load_seconds=load_seconds, rss_loaded_bytes=rss_loaded,
                        empty_starts=empty_starts, restarts=restarts)
