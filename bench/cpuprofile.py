"""Where a starlingpy server spends its CPU per operation: cProfile, one scenario.

    python -m bench.cpuprofile set            # or get, mixed, pipelined-set, pipelined-get
    python -m bench.cpuprofile --ops 50000 --top 30 --clock wall set
    python -m bench.cpuprofile --sync always set   # any server option after --sync

It starts ``starlingpy serve`` under cProfile with a CPU-time clock (so time
blocked in ``epoll_wait`` or descheduled is not counted), resets the profile
once the queue is prepared (SIGUSR1), runs the scenario, dumps the profile
(SIGUSR2) and prints the top functions as microseconds and calls *per
operation*. Absolute figures are inflated by the profiler (each call reads a
clock); the ranking and the calls per operation are what to act on.

The same module is the wrapper the server runs in:
``python -m bench.cpuprofile --wrap OUT CLOCK serve ...``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

SCENARIO_SHAPES = {  # name -> (pattern of "set"/"get", depth)
    "set": (("set",), 1), "get": (("get",), 1), "mixed": (("set", "get"), 1),
    "pipelined-set": (("set",), 32), "pipelined-get": (("get",), 32),
}


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def wrap(out: Path, clock: str, argv: list[str]) -> int:
    """Run the starlingpy CLI under a profiler driven by SIGUSR1 (reset) / SIGUSR2 (dump)."""
    profiler = cProfile.Profile(CLOCKS[clock])

    def reset(signum, frame) -> None:
        profiler.disable()
        profiler.clear()
        Path(f"{out}.reset").write_text("reset\n")
        profiler.enable()

    def dump(signum, frame) -> None:
        profiler.disable()
        profiler.dump_stats(f"{out}.tmp")
        os.replace(f"{out}.tmp", out)  # whole file or nothing, for the waiting driver

    signal.signal(signal.SIGUSR1, reset)
    signal.signal(signal.SIGUSR2, dump)
    from starlingpy.cli import main
    profiler.enable()
    return main(argv)


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the profiled server never wrote {path}")
        time.sleep(0.01)  # polling interval; the condition is the file


def profile_scenario(name: str, ops: int, top: int, clock: str = "cpu",
                     sync: str | None = None) -> str:
    """Run scenario ``name`` against a profiled server; the per-operation table."""
    shape, depth = SCENARIO_SHAPES[name]
    work = Path(tempfile.mkdtemp(prefix="starlingpy-cpuprofile-"))
    out = work / "server.prof"
    command = (sys.executable, "-m", "bench.cpuprofile", "--wrap", str(out), clock, "serve")
    options = ("--sync", sync) if sync else ()
    try:
        return _profile_in(work, name, shape, depth, ops, top, command, options)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _profile_in(work: Path, name: str, shape: tuple[str, ...], depth: int, ops: int, top: int,
                command: tuple[str, ...], options: tuple[str, ...] = ()) -> str:
    # Imported here: the --wrap side of this module runs inside the server and needs none of it.
    from bench import scenarios
    from bench.peers import StarlingpyPeer, StarlingpyServer

    out = work / "server.prof"
    with StarlingpyServer(work / "spool", *options, command=command) as server:
        peer = StarlingpyPeer(server)
        requests = {"set": peer.wire.set_request(peer.queue, scenarios.VALUE),
                    "get": peer.wire.get_request(peer.queue)}
        backlog = ops if shape == ("get",) else scenarios.MIXED_BACKLOG if len(shape) > 1 else 0
        scenarios.top_up(peer, backlog, 120)
        os.kill(server.pid, signal.SIGUSR1)
        _wait_for(Path(f"{out}.reset"))
        measured = scenarios.measure(peer, name, [requests[kind] for kind in shape], depth=depth,
                                     ops=ops, time_limit=120)
        os.kill(server.pid, signal.SIGUSR2)
        _wait_for(out)
    return format_per_op(pstats.Stats(str(out)), measured, top)


def format_per_op(stats: pstats.Stats, measured, top: int) -> str:
    ops = measured.ops
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # by own time
    total = sum(entry[2] for _, entry in rows)
    lines = [(f"{measured.scenario}: {ops:,} ops, {measured.ops_per_second:,.0f} ops/s under the "
             f"profiler; profiled main thread {total / ops * 1e6:.1f} µs/op "
             f"(the unprofiled CPU cost is what `python -m bench` prints)"),
             f"{'own µs/op':>9} {'cum µs/op':>9} {'calls/op':>8}  function"]
    for (filename, line, function), (_, ncalls, own, cumulative, _) in rows[:top]:
        where = function if filename == "~" else f"{function} ({_short(filename)}:{line})"
        lines.append(f"{own / ops * 1e6:9.2f} {cumulative / ops * 1e6:9.2f} {ncalls / ops:8.2f}  {where}")
    return "\n".join(lines)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--wrap"]:
        return wrap(Path(argv[1]), argv[2], argv[3:])
    parser = argparse.ArgumentParser(prog="python -m bench.cpuprofile",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIO_SHAPES))
    parser.add_argument("--ops", type=int, default=30_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: thread CPU time (idle waits excluded; costly clock, so calls "
                             "are overcharged); wall: cheap clock, but waits and preemption count")
    parser.add_argument("--sync", help="the server's --sync policy (default: its default)")
    args = parser.parse_args(argv)
    print(profile_scenario(args.scenario, args.ops, args.top, args.clock, args.sync))
    return 0


if __name__ == "__main__":
    sys.exit(main())
