"""``starlingpy up | down | status | restart``: the supervisor's commands."""

from __future__ import annotations

import argparse
import os
import sys

from starlingpy.config import ConfigError

DEFAULT_CONFIG = "starlingpy.toml"


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=os.environ.get("STARLINGPY_CONFIG", DEFAULT_CONFIG),
                        help="the tier's TOML file (default: $STARLINGPY_CONFIG or ./%(default)s)")


def register(subparsers) -> None:
    """Add ``up``, ``down``, ``status`` and ``restart`` to the ``starlingpy`` CLI."""
    up = subparsers.add_parser("up", help="start the server and the worker pools")
    _add_config(up)
    up.add_argument("--foreground", action="store_true",
                    help="stay in the foreground (systemd Type=simple, containers)")
    up.set_defaults(func=_up)

    down = subparsers.add_parser("down", help="stop the workers gracefully, then the server")
    _add_config(down)
    down.set_defaults(func=_down)

    status = subparsers.add_parser("status", help="each process and each queue's items")
    _add_config(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    restart = subparsers.add_parser("restart", help="down, then up")
    _add_config(restart)
    restart.add_argument("--foreground", action="store_true")
    restart.add_argument("--workers", action="store_true",
                         help="restart only the workers (SIGHUP), the server stays up")
    restart.set_defaults(func=_restart)


def _load(args):
    from starlingpy.supervisor import load_tier

    try:
        tier = load_tier(args.config)
    except ConfigError as error:
        print(f"starlingpy: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if tier.settings.credentials is not None:
        # Read by every client of the tier: status, the readiness probe and,
        # through the inherited environment, each worker.
        os.environ["STARLINGPY_CREDENTIALS"] = str(tier.settings.credentials)
    return tier


def _up(args) -> int:
    from starlingpy.supervisor import up

    return up(_load(args), foreground=args.foreground)


def _down(args) -> int:
    from starlingpy.supervisor import down

    return down(_load(args))


def _status(args) -> int:
    from starlingpy.supervisor import status

    return status(_load(args), as_json=args.json)


def _restart(args) -> int:
    from starlingpy.supervisor import reload_workers, restart

    tier = _load(args)
    return reload_workers(tier) if args.workers else restart(tier, foreground=args.foreground)
