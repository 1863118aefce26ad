"""`starlingpy store`: look after a database store (`init`: create its
tables; `import`: copy a journal spool in)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("store", help="create or fill a PostgreSQL store",
                              description="Look after a PostgreSQL store.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    init = actions.add_parser("init", help="create the tables (idempotent; a server also does it)")
    init.add_argument("url", help="postgresql+psycopg://user@host/db")
    init.set_defaults(func=run_init)
    copy = actions.add_parser("import", help="copy a journal spool (ours or Ruby Starling's) in, "
                                             "in order; a second run copies nothing twice")
    copy.add_argument("url", help="postgresql+psycopg://user@host/db")
    copy.add_argument("--from", dest="source", required=True, metavar="DIR",
                      help="the spool directory (no server may be running on it)")
    copy.set_defaults(func=run_import)


def run_init(args: argparse.Namespace) -> int:
    from starlingpy.store import StoreError
    from starlingpy.store.postgres import create_in

    try:
        create_in(args.url)
    except StoreError as error:
        print(f"starlingpy: {error}", file=sys.stderr)
        return 1
    print("store ready")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from starlingpy.journal.store import StartupError
    from starlingpy.store import StoreError
    from starlingpy.store.pgimport import import_spool

    try:
        copied = import_spool(args.url, args.source)
    except (StoreError, StartupError) as error:
        print(f"starlingpy: {error}", file=sys.stderr)
        return 1
    for name, count in copied.items():
        shown = name.decode("utf-8", "backslashreplace")
        print(f"{shown}: already imported" if count is None else f"{shown}: {count} items")
    return 0
