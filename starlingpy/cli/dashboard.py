"""``starlingpy dashboard``: queues, workers and the failure queue in a browser.

    starlingpy dashboard -c starlingpy.toml --port 8081
    starlingpy dashboard --server 127.0.0.1:22122

A command of its own rather than part of the supervisor: the supervisor is
the process that must never fail, and stays small; the dashboard can be
started, stopped and exposed on its own, and also watches a server that no
supervisor runs. Given the tier's config it reads the supervisor's state
(the same report as ``starlingpy status``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from starlingpy import DEFAULT_ADDRESS
from starlingpy.config import ConfigError

__all__ = ["register", "run"]


def register(subparsers) -> None:
    parser = subparsers.add_parser("dashboard", help="serve the web dashboard",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", help="the tier's TOML file: its server, and the supervisor's "
                                               "processes")
    parser.add_argument("--server", "-s", help=f"queue server host:port (default: the config's, else "
                                               f"{DEFAULT_ADDRESS})")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to serve on (default 8081; 0 picks one)")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between samples and page updates (default 5)")
    parser.add_argument("--failed-queue", default="failed", help="the failure queue (default: failed)")
    parser.add_argument("--auth-file", help="require a login of an admin user of this auth file "
                                            "(default with -c: the server's auth_file)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from starlingpy.client import Client
    from starlingpy.client.queue_stats import read_stats
    from starlingpy.dashboard.app import create_app
    from starlingpy.dashboard.history import QueueHistory, Sampler
    from starlingpy.webserver import WebServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s dashboard %(levelname)s %(message)s")
    if not 0.2 <= args.interval <= 3600:
        print("starlingpy dashboard: --interval must be between 0.2 and 3600 seconds", file=sys.stderr)
        return 2
    processes = worker_metrics = None
    address = args.server
    auth_file = args.auth_file
    if args.config:
        from starlingpy.supervisor import load_tier
        from starlingpy.supervisor.control import status_report

        try:
            tier = load_tier(args.config)
        except ConfigError as error:
            print(f"starlingpy: {error}", file=sys.stderr)
            return 2
        # The running tier's address (its config may say port 0), read once.
        address = address or status_report(tier)["server_address"]
        auth_file = auth_file or tier.shared.server.auth_file
        if tier.settings.credentials is not None:  # the server's login, as the workers have it
            os.environ.setdefault("STARLINGPY_CREDENTIALS", str(tier.settings.credentials))

        def processes():
            return status_report(tier)

        worker_metrics = _worker_metrics(tier)
    address = address or DEFAULT_ADDRESS
    history = QueueHistory(args.interval)
    client = Client([address])
    login = None
    if auth_file:
        from starlingpy.auth import AuthFileError
        from starlingpy.dashboard.login import DashboardLogin

        try:
            login = DashboardLogin(auth_file).check
        except AuthFileError as error:
            print(f"starlingpy dashboard: {error}", file=sys.stderr)
            return 2
    app = create_app(history, client, failed_queue=args.failed_queue, processes=processes,
                     worker_metrics=worker_metrics, login=login)
    try:
        server = WebServer(app, args.host, args.port)
    except OSError as error:
        print(f"starlingpy dashboard: cannot listen on {args.host}:{args.port}: {error.strerror}",
              file=sys.stderr)
        return 1
    from starlingpy.client.security import Credentials

    credentials = Credentials.from_environment()
    sampler = Sampler(lambda: read_stats(address, credentials=credentials), history).start()
    print(f"dashboard on {server.url}/ (server {address})", flush=True)
    try:
        server.run()  # until Ctrl-C or SIGTERM
    finally:
        sampler.stop()
        client.close()
    return 0


def _worker_metrics(tier):
    """The exposition of the supervised workers: their files summed, and
    each pool's configured and living instances."""
    from prometheus_client import generate_latest

    from starlingpy.supervisor.control import status_report
    from starlingpy.supervisor.tier import worker_metrics_dir
    from starlingpy.worker.metrics import workers_registry

    def pool_sizes() -> dict[str, tuple[int, int]]:
        alive = [p["name"] for p in status_report(tier)["processes"] if p["kind"] == "worker" and p["alive"]]
        return {pool.name: (pool.instances, sum(name.rsplit(".", 1)[0] == pool.name for name in alive))
                for pool in tier.pools}

    directory = worker_metrics_dir(tier)

    def render() -> bytes:
        directory.mkdir(parents=True, exist_ok=True)  # before the first `up`, an empty sum
        return generate_latest(workers_registry(directory, pool_sizes))
    return render
