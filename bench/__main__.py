"""`python -m bench` (`make bench`): run the benchmark, print the table, write JSON.

Options: ``--quick`` for a smoke run (small counts, well under 20 s);
``--json PATH`` (default ``.bench/last.json``); ``--server-cmd`` to bench
another memcache queue server that takes ``starlingpy serve``'s options;
``--redis HOST:PORT``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import profile, report, scenarios, security
from bench.fairness import measure_fairness
from bench.peers import (
    DEFAULT_SERVER_COMMAND,
    REPO,
    ControlConnection,
    RedisPeer,
    RubyStarlingPeer,
    RubyStarlingServer,
    StarlingpyPeer,
    StarlingpyServer,
    starling_missing,
)
from bench.replay import measure_replay


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--json", type=Path, default=REPO / ".bench" / "last.json",
                        help="where to write the results (default .bench/last.json)")
    parser.add_argument("--server-cmd", default=shlex.join(DEFAULT_SERVER_COMMAND),
                        help="command that starts the server, before its options")
    parser.add_argument("--redis", default="127.0.0.1:6379", help="Redis to compare with")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the starlingpy server with py-spy during each scenario; "
                             "stacks and a summary go to DIR (figures then include py-spy's cost)")
    return parser.parse_args(argv)


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def server_version(server: StarlingpyServer) -> str:
    with ControlConnection(server.address) as control:
        return control.call_until(b"version\r\n", b"\r\n").decode().split()[-1]


class Sections:
    """Runs each part of the benchmark, keeping going when one fails.

    A failure is printed with its traceback on stderr, remembered for the
    table, and makes the exit status non-zero.
    """

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def run(self, name: str, action):
        progress(name)
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - any failure: report it, measure the rest
            traceback.print_exc()
            last_line = str(error).strip().splitlines()[-1:] or [""]
            self.errors[name] = f"{type(error).__name__}: {last_line[0]}"[:300]
            return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    command = tuple(shlex.split(args.server_cmd))
    host, port = args.redis.rsplit(":", 1)
    try:
        redis = RedisPeer((host, int(port)))
    except OSError as error:
        print(f"bench: cannot reach Redis at {args.redis}: {error}", file=sys.stderr)
        return 2
    spool = Path(tempfile.mkdtemp(prefix="starlingpy-bench-"))
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    sections = Sections()
    names = {"starlingpy": "?", "redis": redis.version}
    starling_absent = starling_missing()
    fairness: dict = {}
    fairness_ops = max(100, sizes.ops // 20)

    def fair(peer) -> None:
        fairness[peer.name] = sections.run(f"fairness on {peer.name}", lambda: measure_fairness(
            peer, scenarios.VALUE, fairness_ops, sizes.time_limit))

    def ours() -> list:
        with StarlingpyServer(spool / "main", command=command) as server:
            names["starlingpy"] = server_version(server)
            progress(f"starlingpy pid {server.pid} on {server.address[0]}:{server.address[1]}, "
                     f"redis pid {redis.pid}")
            peer = StarlingpyPeer(server)
            rows = scenarios.run_scenarios(peer, sizes, profile_dir=args.profile)
            fair(peer)
            return rows

    def starling() -> list:
        with RubyStarlingServer(spool / "starling") as server:
            peer = RubyStarlingPeer(server)
            rows = scenarios.run_scenarios(peer, sizes)
            fair(peer)
            return rows

    try:
        measurements = {
            "starlingpy": sections.run("scenarios on starlingpy", ours),
            "redis": sections.run("scenarios on redis", lambda: scenarios.run_scenarios(redis, sizes)),
            "starling": (None if starling_absent
                         else sections.run("scenarios on Ruby Starling", starling)),
        }
        fair(redis)
        sync = sections.run("sync never / always", lambda: scenarios.run_sync_policies(
            spool, sizes, command, profile_dir=args.profile))
        costs = sections.run("authentication and TLS", lambda: security.measure_security(
            spool / "security", sizes.ops // 2, command))
        replay = sections.run(f"replay of {sizes.replay_items:,} items", lambda: measure_replay(
            spool, sizes.replay_items, command, sizes.load_time_limit))
    finally:
        redis.clear()
        shutil.rmtree(spool, ignore_errors=True)
    meta = {
        "mode": "quick" if args.quick else "full", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(), "python": platform.python_version(),
        "starlingpy_version": names["starlingpy"], "redis_version": names["redis"],
        "starling": starling_absent or "Ruby Starling 0.10.1 (../shared/peers/starling)",
        "sync": "default (1000 ms)",
        "value_bytes": len(scenarios.VALUE), "connections": scenarios.CONNECTIONS,
        "depth": scenarios.PIPELINE_DEPTH, "time_limit": sizes.time_limit,
        "sizes": sizes.__dict__, "wall_seconds": round(time.monotonic() - started, 1),
        "profiled": bool(args.profile),
        # Other work on this shared machine moves every figure: say how busy it was.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
    }
    result = report.build(measurements, sync, replay, meta, sections.errors)
    result["security"] = costs
    result["fairness"] = report.fairness(fairness, fairness_ops)
    print(report.format_table(result))
    print("\n".join(["", *security.format_lines(costs)]))
    report.write_json(result, args.json)
    if args.profile:
        summary = "\n\n".join(profile.summarize(path, top=10)
                               for path in sorted(args.profile.glob("starlingpy_*.txt")))
        (args.profile / "summary.txt").write_text(summary + "\n")
        print("\nwhere starlingpy's time went (py-spy samples, wall-clock while running)\n" + summary)
    progress(f"done in {meta['wall_seconds']} s; results in {args.json}")
    return 1 if sections.errors else 0


if __name__ == "__main__":
    sys.exit(main())
