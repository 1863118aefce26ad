"""``starlingpy failed list|retry|drop``: inspect and act on the failure queue.

    starlingpy failed list                   # what failed, and why
    starlingpy failed retry ID [ID...]       # back to its queue as a first attempt
    starlingpy failed retry --all
    starlingpy failed drop ID [ID...] | --all
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

from starlingpy.cli.work import DEFAULT_SERVER, server_addresses

__all__ = ["register", "run"]


def register(subparsers) -> None:
    parser = subparsers.add_parser("failed", help="list, retry or drop failed messages",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["list", "retry", "drop"])
    parser.add_argument("ids", nargs="*", help="message ids (retry/drop)")
    parser.add_argument("--all", action="store_true", help="retry/drop every failed message")
    parser.add_argument("--server", "-s", action="append", default=[],
                        help="queue server host:port (repeatable or comma-separated; default "
                             + DEFAULT_SERVER + ")")
    parser.add_argument("--queue", default="failed", help="the failure queue (default: failed)")
    parser.add_argument("--limit", type=int, default=100, help="look at most at this many (default 100)")
    parser.add_argument("--json", action="store_true", help="list as JSON lines")
    parser.add_argument("--traceback", action="store_true", help="list with tracebacks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from starlingpy.client import Client, ClientError
    from starlingpy.worker.failed import drop_failed, list_failed, retry_failed

    if args.action != "list" and not args.ids and not args.all:
        print(f"starlingpy failed {args.action}: give message ids or --all", file=sys.stderr)
        return 2
    client = Client(server_addresses(args.server) or [DEFAULT_SERVER])
    try:
        if args.action == "list":
            for item in list_failed(client, args.queue, args.limit):
                print(_describe(item, args))
            return 0
        act = retry_failed if args.action == "retry" else drop_failed
        done = act(client, args.queue, None if args.all else args.ids, args.limit)
        for item in done:
            print(f"{args.action} {item.id or '(undecodable)'}")
        missing = set(args.ids) - {item.id for item in done}
        for msg_id in sorted(missing):
            print(f"not found: {msg_id}", file=sys.stderr)
        return 1 if missing else 0
    except ClientError as exc:
        print(f"starlingpy failed: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _describe(item, args) -> str:
    record = item.record
    if args.json:
        return json.dumps(record.to_dict() if record else {"raw": item.raw.decode("latin-1")})
    if record is None:
        return f"(not a failure record) {item.raw[:80]!r}"
    when = datetime.datetime.fromtimestamp(record.failed_at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    task = record.message.task if record.message else "?"
    attempt = record.message.attempt if record.message else "-"
    line = (f"{item.id or '-':32}  {when}  queue={record.queue}  task={task}  attempt={attempt}  "
            f"{record.reason}: {record.error}")
    if args.traceback and record.traceback:
        line += "\n" + record.traceback.rstrip()
    return line
