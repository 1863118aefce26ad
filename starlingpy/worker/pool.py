"""N worker processes under one parent (``starlingpy work --instances N``),
on the same process layer as the supervisor
(:class:`starlingpy.process.managed.ManagedProcess`).

Each worker is a fresh ``python -m starlingpy work ... --instances 1``
subprocess: nothing (sockets, engines, locks) is inherited from the parent.

Signals: the children run in their own process groups, so a terminal's
Ctrl-C reaches only the parent, which forwards each SIGTERM/SIGINT it gets
as a SIGTERM to every child. One signal: every child finishes its current
message and exits (warm); two: every child aborts its message and exits
(cold). Each child asks the kernel for SIGTERM when the parent dies
(``--parent-pid``, ``die_with_parent``), so a SIGKILLed parent leaves no
orphan working.

The parent is the children's subreaper (Linux): the programs of a child
killed mid-task are orphaned to it, not to init; it reaps them while it
waits, and kills what still runs once every child has exited.

Each child gets ``STARLINGPY_WORKER_INDEX`` (its slot, 0..N-1) in its
environment. A child that dies while no stop was asked for (crash, OOM
kill, non-zero exit) is restarted after the supervisor's back-off
(:class:`starlingpy.backoff.RestartPolicy`: 0.5 s doubling to 30 s, reset
after a healthy run; given up after 6 deaths within 60 s); a child that
exits 0 on its own (burst mode) is not restarted.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence

import trio

from starlingpy.backoff import RestartPolicy
from starlingpy.process.managed import (
    ManagedProcess,
    ProcessRecord,
    kill_strays,
    managed_pids,
    reap_orphans_forever,
)
from starlingpy.process.reaper import become_subreaper

__all__ = ["WorkerPool", "worker_command", "WORKER_INDEX_ENV"]

log = logging.getLogger("starlingpy.worker.pool")

# Each child learns its slot, e.g. to pick its own sandbox uid for
# run_program so one instance's fork bomb cannot eat another's process budget.
WORKER_INDEX_ENV = "STARLINGPY_WORKER_INDEX"


class WorkerPool:
    """Run ``instances`` copies of ``command`` (an argv) and supervise them.

    ``command`` gets ``--parent-pid <pid>`` appended. :meth:`run` blocks
    until every child has exited after a stop (or on its own, exit 0, or
    given up on in a crash loop) and returns 0 if all of them ended well,
    else 1. ``policy`` makes each child's restart policy.
    """

    def __init__(self, command: Sequence[str], instances: int, env: dict | None = None,
                 policy: Callable[[], RestartPolicy] = RestartPolicy) -> None:
        if instances < 1:
            raise ValueError("instances must be >= 1")
        argv = [*command, "--parent-pid", str(os.getpid())]
        base_env = dict(os.environ if env is None else env)
        self.workers = [
            ManagedProcess(ProcessRecord(name=f"worker {index}", kind="worker"), argv,
                           env={**base_env, WORKER_INDEX_ENV: str(index)}, policy=policy(),
                           restart_on_success=False)
            for index in range(instances)]

    def run(self) -> int:
        return trio.run(self._run)

    def pids(self) -> list[int]:
        """The workers running now (read from another thread by the metrics endpoint)."""
        return managed_pids(self.workers)

    async def _run(self) -> int:
        subreaper = become_subreaper()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward_signals, signals, nursery)
                if subreaper:
                    nursery.start_soon(reap_orphans_forever, lambda: self.workers)
                async with trio.open_nursery() as children:
                    for worker in self.workers:
                        await children.start(worker.run)
                nursery.cancel_scope.cancel()  # every child is done
        if subreaper:
            kill_strays(self.workers)
        ok = all(worker.exit_ok() for worker in self.workers)
        log.info("pool: all workers exited (%s)", "ok" if ok else "exit statuses " + ", ".join(
            worker.record.last_exit or "-" for worker in self.workers))
        return 0 if ok else 1

    async def _forward_signals(self, signals, nursery: trio.Nursery) -> None:
        received = 0
        async for signum in signals:
            received += 1
            log.info("pool: got %s, %s stop of %d worker(s)", signal.Signals(signum).name,
                     "warm" if received == 1 else "cold", len(self.workers))
            for worker in self.workers:
                if received == 1:
                    # No grace deadline: the operator's second signal makes it cold.
                    nursery.start_soon(worker.stop, math.inf)
                else:
                    worker.signal(signal.SIGTERM)


def worker_command(module: str, argv_tail: Sequence[str]) -> list[str]:
    """The argv of one pool child."""
    return [sys.executable, "-m", "starlingpy", "work", module, *argv_tail, "--instances", "1"]
