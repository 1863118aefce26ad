"""`starlingpy store`: look after a database store (`init`: create its tables)."""

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
