"""`starlingpy serve`: run the queue server (Starling's options, plus ours)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from starlingpy import __version__
from starlingpy.config import PATH_KEYS, Config, ConfigError, load_config
from starlingpy.journal.sync import SyncPolicy
from starlingpy.process.daemon import READY_FD_OPTION


def register(subparsers) -> None:
    # -h is Starling's --host, so help is --help only.
    p = subparsers.add_parser("serve", add_help=False, help="run the queue server",
                              description="Run the starlingpy queue server.")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-h", "--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, help="TCP port (default 22122; 0 picks a free one)")
    p.add_argument("-q", "--queue_path", "--queue-path", dest="queue_path",
                   help="queue directory (default ./var/spool)")
    p.add_argument("-d", "--daemonize", action="store_true", default=None,
                   help="detach and run in the background")
    p.add_argument("-P", "--pid", help="write the server's pid to this file")
    p.add_argument("-u", "--user", help="run as this user (needs root)")
    p.add_argument("-g", "--group", help="run as this group (needs root)")
    p.add_argument("-L", "--log", help="log to this file (default: stderr)")
    p.add_argument("-v", "--verbose", action="count", help="more logging (repeat for more)")
    p.add_argument("-t", "--timeout", type=float, help="idle disconnect in seconds (0 = never)")
    p.add_argument("-f", "--config", help="config file: TOML, or Starling's YAML")
    p.add_argument("-V", "--version", action="version", version=f"starlingpy {__version__}")
    p.add_argument("--sync", type=_sync_policy,
                   help="journal sync policy: always | never | period in ms (default 1000)")
    p.add_argument("--max-item-size", dest="max_item_size", type=int,
                   help="largest item in bytes (default 16 MiB)")
    p.add_argument("--max-connections", dest="max_connections", type=int,
                   help="connections served at once (default 4096)")
    p.add_argument("--max-journal-size", dest="max_journal_size", type=int,
                   help="truncate an empty queue's journal past this size (default 16 MiB)")
    p.add_argument("--max-queues", dest="max_queues", type=int,
                   help="queues at most; a set to a new name past it is refused (default 10000)")
    p.add_argument("--enable-shutdown", dest="enable_shutdown", action="store_true", default=None,
                   help="let clients stop the server with `shutdown`")
    p.add_argument("--flush-all-empties", dest="flush_all_empties", action="store_true",
                   default=None, help="let `flush_all` empty every queue")
    p.add_argument(READY_FD_OPTION, dest="ready_fd", type=int,
                   help="report readiness (or why start-up failed) on this inherited pipe fd")
    p.add_argument("--store", dest="url", metavar="URL",
                   help="keep the queues in PostgreSQL at URL (postgresql+psycopg://user@host/db) "
                        "instead of journal files")
    p.add_argument("--identity", help="this server's name in the leases of open items "
                                      "(PostgreSQL store; default HOSTNAME:PORT)")
    p.add_argument("--lease", type=float, help="seconds a dead server's open items stay held "
                                               "(PostgreSQL store; default 30)")
    p.add_argument("--metrics", help="serve Prometheus metrics on HOST:PORT (default: off)")
    p.add_argument("--metrics-queues", dest="metrics_queues", type=non_negative,
                   help="queues labelled in metrics, deepest first; the rest sum as (other) (default 100)")
    p.add_argument("--auth-file", dest="auth_file",
                   help="require authentication; users and rights in this file (see `starlingpy passwd`)")
    p.add_argument("--tls-cert", dest="tls_cert", help="TLS certificate chain (PEM): the listener speaks TLS only")
    p.add_argument("--tls-key", dest="tls_key", help="TLS private key (PEM)")
    p.add_argument("--tls-ca", dest="tls_ca", help="CA (PEM) that must have signed every client's certificate")
    p.set_defaults(func=run)


def _sync_policy(text: str) -> SyncPolicy:
    try:
        return SyncPolicy.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def resolve_config(args: argparse.Namespace) -> Config:
    """Defaults, then the config file, then the flags given on the command line."""
    config = load_config(args.config) if args.config else Config()
    store = _overridden(config.store, args)
    if args.url:
        store = dataclasses.replace(store, kind="postgresql")
    return dataclasses.replace(config, server=_overridden(config.server, args), store=store)


def _overridden(settings, args: argparse.Namespace):
    """``settings`` (a ServerConfig or StoreConfig) with the flags given."""
    overrides = {}
    for field in dataclasses.fields(settings):
        value = getattr(args, field.name, None)
        if value is not None:
            overrides[field.name] = Path(value) if field.name in PATH_KEYS else value
    return dataclasses.replace(settings, **overrides)


def run(args: argparse.Namespace) -> int:
    from starlingpy.app import start_server  # heavy imports only for serve

    try:
        config = resolve_config(args)
    except ConfigError as error:
        print(f"starlingpy: {error}", file=sys.stderr)
        return 2
    return start_server(config)
