"""The running tier: the server, then the worker pools, kept alive until a
stop signal, then stopped in reverse order.

Signals: SIGTERM or SIGINT stops the tier (workers warm then cold, then the
server); SIGHUP restarts the workers one by one (new task code), leaving the
server up.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

from starlingpy.backoff import RestartPolicy
from starlingpy.process.managed import (
    ManagedProcess,
    ProcessRecord,
    child_env,
    kill_strays,
    reap_orphans_forever,
)
from starlingpy.process.reaper import become_subreaper
from starlingpy.supervisor.config import TierConfig
from starlingpy.supervisor.state import TierState, remove_state, save_state
from starlingpy.worker.metrics import MULTIPROC_ENV, fresh_directory
from starlingpy.worker.pool import WORKER_INDEX_ENV

log = logging.getLogger("starlingpy.supervisor")
SERVER_STOP_GRACE = 10.0


class StartupError(Exception):
    """The tier could not be brought up (the message says why)."""


def worker_metrics_dir(tier: TierConfig) -> Path:
    return tier.settings.run_dir / "worker-metrics"


def pid_path(tier: TierConfig, name: str) -> Path:
    """Where the pid of the process ``name`` (``supervisor``, ``server``, ``graders.1``) is kept."""
    return tier.settings.run_dir / f"{name}.pid"


class Tier:
    """The processes of one config file and the state file that shows them."""

    def __init__(self, tier: TierConfig) -> None:
        self.config = tier
        self.address = tier.server_address
        self.state = TierState(supervisor_pid=os.getpid(), started_at=time.time(),
                               config=str(tier.path), server_address=self.address)
        self.server = self._managed("server", "server", self._server_argv(),
                                    cwd=tier.path.parent, env=child_env({}),
                                    log_path=tier.shared.server.log, reports_ready=True)
        self.workers: list[ManagedProcess] = []
        self.failed = False  # start-up failed (reported through ``ready``)

    def _policy(self) -> RestartPolicy:
        s = self.config.settings
        return RestartPolicy(initial=s.backoff_initial, maximum=s.backoff_max,
                             loop_restarts=s.crash_loop_restarts, loop_window=s.crash_loop_window)

    def _managed(self, name: str, kind: str, argv: list[str], *, cwd, env,
                 log_path: Path | None = None, reports_ready: bool = False) -> ManagedProcess:
        """A process and its record; its log is ``log_path`` or ``log_dir/NAME.log``."""
        record = ProcessRecord(name=name, kind=kind)
        self.state.processes.append(record)
        return ManagedProcess(record, argv, cwd=cwd, env=env,
                              log_path=log_path or self.config.settings.log_dir / f"{name}.log",
                              pid_path=pid_path(self.config, name), policy=self._policy(),
                              on_change=self.save, reports_ready=reports_ready)

    def _server_argv(self, port: int | None = None) -> list[str]:
        argv = [sys.executable, "-m", "starlingpy", "serve", "-f", str(self.config.path)]
        return argv + ["-p", str(port)] if port is not None else argv

    def _worker_argv(self, pool) -> list[str]:
        return [sys.executable, "-m", "starlingpy", "work", pool.module,
                "--queues", ",".join(pool.queues), "--instances", "1", "--server", self.address]

    def save(self) -> None:
        save_state(self.config.settings.run_dir, self.state)

    async def _wait_for_server(self) -> None:
        """Until the server reports on its readiness pipe that it listens
        (the port it reports is kept when the config asks for port 0);
        StartupError if it fails, dies or the deadline passes."""
        with trio.move_on_after(self.config.settings.ready_timeout):
            try:
                summary = await self.server.wait_ready()  # "listening on HOST:PORT"
            except RuntimeError as error:
                raise StartupError(f"the server failed to start: {error}\n"
                                   f"{self.server.read_new_output()}") from None
            port = int(summary.rsplit(":", 1)[1])
            if port != self.config.server_port:
                self.address = f"{self.config.server_host}:{port}"
                self.state.server_address = self.address
                # Restarts must come back on the same port the workers know.
                self.server.argv = self._server_argv(port)
                self.save()
            return
        raise StartupError(f"the server did not report ready on {self.address} within "
                           f"{self.config.settings.ready_timeout} s; see {self.server.log_path}")

    async def run(self, ready: Callable[[str | None], None]) -> None:
        """Bring the tier up, call ``ready(None)`` (or ``ready(error)``), keep
        it up until SIGTERM/SIGINT, then bring it down."""
        if become_subreaper():
            log.info("subreaper: orphaned descendants will be reaped here")
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reap_orphans_forever, self._processes)
                try:
                    await nursery.start(self.server.run)
                    await self._wait_for_server()
                    await self._start_workers(nursery)
                except StartupError as error:
                    log.error("start-up failed: %s", error)
                    self.failed = True
                    await self._stop(nursery)  # nothing left behind once `up` says it failed
                    ready(str(error))
                    return
                ready(None)
                log.info("tier up: server %s, %d worker(s)", self.address, len(self.workers))
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP: restarting the workers")
                        for worker in self.workers:
                            worker.bounce(nursery)
                        continue
                    log.info("%s: stopping the tier", signal.Signals(signum).name)
                    break
                await self._stop(nursery)

    async def _start_workers(self, nursery: trio.Nursery) -> None:
        """Every instance of every pool, one after another."""
        # Every worker writes its metrics here; `starlingpy dashboard -c` sums them.
        metrics = fresh_directory(worker_metrics_dir(self.config))
        for pool in self.config.pools:
            for index in range(1, pool.instances + 1):
                name = f"{pool.name}.{index}"
                # Each instance knows who it is (e.g. to pick its own sandbox uid).
                # Tasks that push tasks reach the server through the worker's own
                # client (given by --server).
                env = child_env({**pool.env, "STARLINGPY_WORKER": name,
                                 WORKER_INDEX_ENV: str(index), MULTIPROC_ENV: str(metrics)},
                                python_path=pool.directory)
                worker = self._managed(name, "worker", self._worker_argv(pool),
                                       cwd=pool.directory, env=env, reports_ready=True)
                self.workers.append(worker)
                await nursery.start(worker.run)
                await self._wait_for_worker(worker, pool.module)

    async def _wait_for_worker(self, worker: ManagedProcess, module: str) -> None:
        """Until the worker reports it imported its task module; StartupError
        if it could not, died, or the deadline passed (``up`` then fails)."""
        with trio.move_on_after(self.config.settings.ready_timeout):
            try:
                await worker.wait_ready()
            except RuntimeError as error:
                raise StartupError(f"worker {worker.name} ({module}) failed to start: {error}; "
                                   f"see {worker.log_path or 'the supervisor log'}") from None
            return
        raise StartupError(f"worker {worker.name} ({module}) did not report ready within "
                           f"{self.config.settings.ready_timeout} s")

    def _processes(self) -> list[ManagedProcess]:
        return [self.server, *self.workers]

    async def _stop(self, nursery: trio.Nursery) -> None:
        """Workers first (warm, then cold after the grace period), then the server."""
        async with trio.open_nursery() as stoppers:
            for worker in self.workers:
                stoppers.start_soon(worker.stop, self.config.settings.grace_period)
        await self.server.stop(SERVER_STOP_GRACE, warm_then_cold=False)
        nursery.cancel_scope.cancel()
        kill_strays(self._processes())
        remove_state(self.config.settings.run_dir)
        log.info("tier down")

