"""Worker metrics (``starlingpy work --metrics HOST:PORT``): messages by task
and outcome, task duration, and how many worker processes are alive.

The pool parent serves them for all its children with prometheus_client's
multiprocess mode: the parent makes a private directory, passes it to every
child in ``PROMETHEUS_MULTIPROC_DIR`` (read when a child first imports
prometheus_client, so it must be in the child's environment from the start),
each child writes its counters to its own memory-mapped files there, and a
scrape of the parent sums them. A restarted child's counts stay counted.
The directory is removed when the pool exits. Under the supervisor
(``starlingpy up``) each worker instance is its own process: the supervisor
gives them all ``RUN_DIR/worker-metrics`` and ``starlingpy dashboard -c``
serves the sum at ``/metrics``.

Labels are bounded by the code: ``task`` is one of the task set's names, or
``(unknown)`` for a message that names none; ``outcome`` is one of the
worker's five outcomes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Container, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from starlingpy.client.servers import parse_address

log = logging.getLogger("starlingpy.worker.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNKNOWN_TASK = "(unknown)"
# Tasks here range from a quick database update to a grader running a program
# for seconds.
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class WorkerMetrics:
    """In one worker process: what :class:`~starlingpy.worker.loop.Worker`
    reports after each message (its ``on_finish``)."""

    def __init__(self, task_names: Container[str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        if MULTIPROC_ENV not in os.environ:
            raise RuntimeError(f"worker metrics need {MULTIPROC_ENV} (set by the pool parent)")
        registry = CollectorRegistry()  # private: values go to the shared files, not a registry
        self._task_names = task_names
        self.messages = Counter("starlingpy_worker_messages", "Messages handled, by task and outcome.",
                                ["task", "outcome"], registry=registry)
        self.seconds = Histogram("starlingpy_worker_task_seconds",
                                 "Time from taking a message to disposing of it.", ["task"],
                                 buckets=TASK_BUCKETS, registry=registry)

    def finished(self, task: str | None, outcome: str, seconds: float) -> None:
        label = task if task in self._task_names else UNKNOWN_TASK
        self.messages.labels(label, outcome).inc()
        self.seconds.labels(label).observe(seconds)


PoolSizes = Callable[[], Mapping[str, tuple[int, int]]]  # pool name -> (instances, alive)


class _PoolCollector:
    """How many worker processes each pool runs and has alive, at scrape time."""

    def __init__(self, pools: PoolSizes) -> None:
        self._pools = pools

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        sizes = self._pools()
        workers = GaugeMetricFamily("starlingpy_pool_workers", "Worker processes the pool runs.",
                                    labels=["pool"])
        alive = GaugeMetricFamily("starlingpy_pool_workers_alive", "Worker processes alive now.",
                                  labels=["pool"])
        for pool, (instances, living) in sorted(sizes.items()):
            workers.add_metric([pool], instances)
            alive.add_metric([pool], living)
        yield workers
        yield alive


def workers_registry(directory: str | Path, pools: PoolSizes):
    """A registry summing every worker's files in ``directory``, plus the
    pools' sizes: what a pool parent or the dashboard serves."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    registry.register(_PoolCollector(pools))
    return registry


def fresh_directory(directory: Path) -> Path:
    """``directory``, emptied: a new tier's counters start from zero
    rather than adding to a previous run's files."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


@contextmanager
def pool_metrics(address: str, pools: PoolSizes, env: dict) -> Iterator[str]:
    """In the pool parent: make the shared directory (named in ``env`` for
    the children), serve ``/metrics`` on ``address`` from a thread, and yield
    the URL; stop and clean up on exit. Raises ValueError for a bad address,
    OSError when it cannot listen."""
    from prometheus_client import start_http_server

    host, port = parse_address(address)
    directory = tempfile.mkdtemp(prefix="starlingpy-worker-metrics-")
    env[MULTIPROC_ENV] = directory
    try:
        server, thread = start_http_server(port, addr=host, registry=workers_registry(directory, pools))
        try:
            url = f"http://{host}:{server.server_port}/metrics"
            log.info("metrics on %s", url)
            yield url
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
