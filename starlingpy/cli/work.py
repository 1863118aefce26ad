"""``starlingpy work MODULE``: run worker processes for a task module.

    starlingpy work myapp.tasks --queues pulls,pushes --instances 4 --server 127.0.0.1:22122

MODULE is a dotted module name (importable from the current directory) or a
path to a ``.py`` file, optionally ``:name`` to pick the TaskSet when the
module has several. Every SQLAlchemy Engine among the module's globals is
registered with the worker (verified before each message, fork-safe).
``--instances`` defaults to one per core; with more than one, a parent
process supervises that many worker processes (see
:mod:`starlingpy.worker.pool`).

Exit status: 0 after a warm stop (or a finished ``--burst``), 1 after a cold
stop or when workers crashed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

from starlingpy import DEFAULT_ADDRESS
from starlingpy.process.daemon import READY_FD_OPTION, reporter

__all__ = ["register", "run", "load_taskset", "server_addresses", "DEFAULT_SERVER"]

DEFAULT_SERVER = DEFAULT_ADDRESS


def server_addresses(values: list[str]) -> list[str]:
    """The ``host:port`` list from repeated, possibly comma-separated,
    ``--server`` options."""
    return [s for value in values for s in value.split(",") if s]


def register(subparsers) -> None:
    parser = subparsers.add_parser("work", help="run worker processes for a task module",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="task module: dotted name or file.py, optionally :taskset")
    parser.add_argument("--queues", help="comma-separated queues in priority order "
                                         "(default: the task set's queues)")
    parser.add_argument("--instances", "-n", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core)")
    parser.add_argument("--server", "-s", action="append", default=[],
                        help="queue server host:port (repeatable or comma-separated; default: "
                             "the task set's client, else " + DEFAULT_SERVER + ")")
    parser.add_argument("--burst", action="store_true", help="exit once every queue is empty")
    parser.add_argument("--max-messages", type=int, default=None, help="exit after this many messages")
    parser.add_argument("--wait-timeout", type=float, default=5.0,
                        help="seconds one blocking get waits (default 5)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument("--metrics", help="serve Prometheus metrics of every worker process on "
                                          "HOST:PORT (from a pool parent, even for one instance)")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    # A supervisor's readiness pipe: told once the task module is imported (or why not).
    parser.add_argument(READY_FD_OPTION, dest="ready_fd", type=int, default=None,
                        help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if args.instances < 1:
        print("starlingpy work: --instances must be >= 1", file=sys.stderr)
        return 2
    if (args.instances > 1 or args.metrics) and args.parent_pid is None:
        return _run_pool(args)
    return _run_worker(args)


def _run_pool(args: argparse.Namespace) -> int:
    from starlingpy.worker.pool import WorkerPool, worker_command

    tail = ["--wait-timeout", str(args.wait_timeout), "--log-level", args.log_level]
    if args.queues:
        tail += ["--queues", args.queues]
    for server in args.server:
        tail += ["--server", server]
    if args.burst:
        tail.append("--burst")
    if args.max_messages is not None:
        tail += ["--max-messages", str(args.max_messages)]
    env = dict(os.environ)
    # Children import MODULE from the directory the parent was started in.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    command = worker_command(args.module, tail)
    if not args.metrics:
        return WorkerPool(command, args.instances, env=env).run()
    from starlingpy.worker.metrics import pool_metrics

    pools: list[WorkerPool] = []

    def sizes():  # from the HTTP thread: only reads the live children; stale is harmless
        return {args.module: (args.instances, len(pools[0].pids()) if pools else 0)}

    try:
        with pool_metrics(args.metrics, sizes, env):  # (names the metrics directory in env)
            pools.append(WorkerPool(command, args.instances, env=env))
            return pools[0].run()
    except (ValueError, OSError) as exc:
        print(f"starlingpy work: --metrics {args.metrics}: {exc}", file=sys.stderr)
        return 2


WORKER_DEAD_RETRY = 1.0  # seconds a worker's client skips a server that failed


def _stop_before_start(signum, frame) -> None:
    raise SystemExit(0)  # nothing taken yet, nothing to finish


def _run_worker(args: argparse.Namespace) -> int:
    # Until the worker installs its own handlers, a stop just exits.
    signal.signal(signal.SIGTERM, _stop_before_start)
    signal.signal(signal.SIGINT, _stop_before_start)
    from sqlalchemy.engine import Engine

    from starlingpy.client import Client
    from starlingpy.process.managed import die_with_parent
    from starlingpy.worker.loop import Worker
    from starlingpy.worker.metrics import MULTIPROC_ENV, WorkerMetrics

    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    ready = reporter(args.ready_fd) if args.ready_fd is not None else None
    try:
        taskset, module = load_taskset(args.module)
    except Exception as exc:  # a module that raises on import is as unusable as a missing one
        message = f"cannot load task module {args.module}: {exc!r}"
        print(f"starlingpy work: {message}", file=sys.stderr)
        if ready is not None:
            ready(message)
        return 2
    servers = server_addresses(args.server)
    if servers:
        # A restarted server is tried again after a second, not the client's
        # default five: with the loop's back-off (at most 2 s) a worker is
        # back within about 3 s of the server.
        client = Client(servers, dead_retry=WORKER_DEAD_RETRY)
    elif taskset.client_factory is not None:
        client = taskset.client
    else:
        client = Client([DEFAULT_SERVER])
    queues = [q for q in (args.queues or "").split(",") if q] or None
    engines = [value for value in vars(module).values() if isinstance(value, Engine)]
    metrics = None
    if MULTIPROC_ENV in os.environ:  # a pool parent serves our metrics
        metrics = WorkerMetrics(taskset.tasks)
    worker = Worker(taskset, queues, client=client, engines=engines, wait_timeout=args.wait_timeout,
                    adopt_orphans=True, on_finish=metrics.finished if metrics else None)
    worker.install_signal_handlers()
    if ready is not None:
        ready(None, f"worker of {args.module} on queues {','.join(worker.queues)}")
    try:
        worker.work(burst=args.burst, max_messages=args.max_messages)
    finally:
        client.close()  # the client is ours: the worker's caller owns it
    return 1 if worker.stop_requested == "cold" else 0


def load_taskset(spec: str):
    """Import ``module[:name]`` (dotted name or ``.py`` path) and return
    ``(taskset, module)``. Raises ImportError or LookupError."""
    from starlingpy.worker.tasks import TaskSet

    target, _, name = spec.partition(":")
    module = _import(target)
    if name:
        found = getattr(module, name, None)
        if not isinstance(found, TaskSet):
            raise LookupError(f"{target} has no TaskSet named {name!r}")
        return found, module
    sets = [value for value in vars(module).values() if isinstance(value, TaskSet)]
    if len(sets) != 1:
        raise LookupError(f"{target} defines {len(sets)} TaskSets; name one as {target}:NAME")
    return sets[0], module


def _import(target: str) -> ModuleType:
    if target.endswith(".py") or os.sep in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise ImportError(f"no such file: {target}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the app's own package
    return importlib.import_module(target)
