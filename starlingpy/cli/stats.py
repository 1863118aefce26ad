"""`starlingpy stats [host:port] [--watch S]`: a readable view of a server's
stats, one row per queue (what Starling's ``starling_top`` did)."""

from __future__ import annotations

import argparse
import sys
import time

from starlingpy import DEFAULT_ADDRESS
from starlingpy.client.errors import ServerError
from starlingpy.client.queue_stats import queue_names, read_stats
from starlingpy.client.security import Credentials

QUEUE_COLUMNS = ("items", "bytes", "total_items", "expired_items", "open_transactions",
                 "waiters", "age", "logsize")
HEADINGS = ("queue", "items", "bytes", "total", "expired", "open", "waiters", "age_ms", "logsize")


def register(subparsers) -> None:
    p = subparsers.add_parser("stats", help="show a server's queues and counters",
                              epilog="Credentials and TLS come from STARLINGPY_CREDENTIALS (a file) or "
                                     "STARLINGPY_USERNAME/PASSWORD/TLS_CA/TLS_CERT/TLS_KEY.")
    p.add_argument("address", nargs="?", default=DEFAULT_ADDRESS, help="host:port")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    p.add_argument("--timeout", type=float, default=5.0, help="socket timeout in seconds")
    p.set_defaults(func=run)


def queue_rows(stats: dict[str, str]) -> dict[str, dict[str, str]]:
    """Per-queue values, keyed by queue name; a column the server lacks is ``?``."""
    return {name: {column: stats.get(f"queue_{name}_{column}", "?") for column in QUEUE_COLUMNS}
            for name in queue_names(stats)}


def render(address: str, stats: dict[str, str]) -> str:
    lines = [f"starlingpy {stats.get('version', '?')} at {address}  pid {stats.get('pid', '?')}  "
             f"uptime {stats.get('uptime', '?')}s  connections {stats.get('curr_connections', '?')}  "
             f"items {stats.get('curr_items', '?')}  gets {stats.get('cmd_get', '?')} "
             f"(hits {stats.get('get_hits', '?')})  sets {stats.get('cmd_set', '?')}"]
    rows = [HEADINGS] + [(name, *(row[c] for c in QUEUE_COLUMNS))
                         for name, row in sorted(queue_rows(stats).items())]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(HEADINGS))]
    for row in rows:
        lines.append("  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))))
    if len(rows) == 1:
        lines.append("(no queues)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    while True:
        try:
            stats = read_stats(args.address, args.timeout, Credentials.from_environment())
        except (OSError, ValueError, ServerError) as error:
            print(f"starlingpy stats: cannot read {args.address}: {error}", file=sys.stderr)
            return 1
        if args.watch:
            sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen between refreshes
        print(render(args.address, stats), flush=True)
        if not args.watch:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
