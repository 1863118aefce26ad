"""N worker processes under one parent (``starlingpy work --instances N``).

Each worker is a fresh ``python -m starlingpy work ... --instances 1``
subprocess: nothing (sockets, engines, locks) is inherited from the parent.

Signals: the children run in their own session, so a terminal's Ctrl-C
reaches only the parent, which forwards each SIGTERM/SIGINT it gets as a
SIGTERM to every child. One signal: every child finishes its current message
and exits (warm); two: every child aborts its message and exits (cold). Each
child asks the kernel for SIGTERM when the parent dies
(``PR_SET_PDEATHSIG``), so a SIGKILLed parent leaves no orphan working.

The parent is the children's subreaper (Linux): the programs of a child
killed mid-task are orphaned to it, not to init; it reaps them while it
waits, and kills what still runs once every child has exited.

Each child gets ``STARLINGPY_WORKER_INDEX`` (its slot, 0..N-1) in its
environment. A child that dies while no stop was asked for (crash, OOM kill, non-zero
exit) is restarted after a back-off that doubles from 1 s up to 30 s, and
resets once a child has lived 30 s; a child that exits 0 on its own (burst
mode) is not restarted.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from starlingpy.reaper import PeriodicReaper, become_subreaper, kill_adopted, prctl

__all__ = ["WorkerPool", "die_with_parent", "worker_command", "WORKER_INDEX_ENV"]

log = logging.getLogger("starlingpy.worker.pool")

_BACKOFF_MIN, _BACKOFF_MAX, _HEALTHY_AFTER = 1.0, 30.0, 30.0
_REAP_INTERVAL = 1.0  # how long the parent's wait may last while orphans might need reaping
_PR_SET_PDEATHSIG = 1
# Each child learns its slot (0..N-1), e.g. to pick its own sandbox uid for
# run_program so one instance's fork bomb cannot eat another's process budget.
WORKER_INDEX_ENV = "STARLINGPY_WORKER_INDEX"


def die_with_parent(parent_pid: int) -> None:
    """In a pool child: get SIGTERM when the parent dies (Linux); exit now
    if it is already gone."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # not Linux: the parent still forwards signals
    if os.getppid() != parent_pid:
        raise SystemExit(0)


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.pidfd: int | None = None
        self.started = 0.0
        self.backoff = _BACKOFF_MIN
        self.restart_at: float | None = None
        self.done = False


class WorkerPool:
    """Run ``instances`` copies of ``command`` (an argv) and supervise them.

    ``command`` gets ``--parent-pid <pid>`` appended. :meth:`run` blocks
    until every child has exited after a stop (or on its own, exit 0) and
    returns 0 if all of them exited 0, else 1.
    """

    def __init__(self, command: Sequence[str], instances: int, env: dict | None = None) -> None:
        if instances < 1:
            raise ValueError("instances must be >= 1")
        self.command = list(command)
        self.slots = [_Slot(i) for i in range(instances)]
        self.env = env
        self.signals_received = 0
        self.exit_codes: list[int] = []
        self._reap: PeriodicReaper | None = None

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        if become_subreaper():
            self._reap = PeriodicReaper(self.pids, interval=_REAP_INTERVAL)
        try:
            for slot in self.slots:
                self._start(slot)
            while not all(slot.done for slot in self.slots):
                self._wait_once(wake_r)
        finally:
            if self._reap is not None and (strays := kill_adopted(self.pids())):
                log.info("pool: killed %d orphaned process(es)", strays)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)
        ok = all(code == 0 for code in self.exit_codes)
        log.info("pool: all workers exited (%s)", "ok" if ok else f"exit codes {self.exit_codes}")
        return 0 if ok else 1

    def pids(self) -> list[int]:
        return [slot.proc.pid for slot in self.slots if slot.proc is not None and not slot.done]

    # -- internals --------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.signals_received += 1
        log.info("pool: got %s, %s stop of %d worker(s)", signal.Signals(signum).name,
                 "warm" if self.signals_received == 1 else "cold", len(self.pids()))
        for slot in self.slots:
            slot.restart_at = None
            if slot.pidfd is not None:  # running: forward
                try:
                    slot.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            elif not slot.done:  # crashed, waiting for its restart: not any more
                slot.done = True
                self.exit_codes.append(slot.proc.returncode if slot.proc else 1)

    def _start(self, slot: _Slot) -> None:
        env = dict(self.env if self.env is not None else os.environ)
        env[WORKER_INDEX_ENV] = str(slot.index)
        slot.proc = subprocess.Popen(self.command + ["--parent-pid", str(os.getpid())],
                                     env=env, start_new_session=True)
        slot.pidfd = os.pidfd_open(slot.proc.pid)
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("pool: worker %d started, pid %d", slot.index, slot.proc.pid)

    def _wait_once(self, wake_r: int) -> None:
        now = time.monotonic()
        due = [s.restart_at for s in self.slots if s.restart_at is not None]
        timeout = max(0.0, min(due) - now) if due else None
        if self._reap is not None:
            timeout = _REAP_INTERVAL if timeout is None else min(timeout, _REAP_INTERVAL)
        fds = [s.pidfd for s in self.slots if s.pidfd is not None]
        try:
            readable, _, _ = select.select(fds + [wake_r], [], [], timeout)
        except InterruptedError:
            readable = []
        if wake_r in readable:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        for slot in self.slots:
            if slot.pidfd is not None and slot.pidfd in readable:
                self._child_exited(slot)
        if self._reap is not None:
            self._reap()
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and now >= slot.restart_at and self.signals_received == 0:
                self._start(slot)

    def _child_exited(self, slot: _Slot) -> None:
        code = slot.proc.wait()
        os.close(slot.pidfd)
        slot.pidfd = None
        lived = time.monotonic() - slot.started
        if self.signals_received or code == 0:
            log.info("pool: worker %d (pid %d) exited with %d", slot.index, slot.proc.pid, code)
            if self.signals_received and code == -signal.SIGTERM:
                code = 0  # our SIGTERM came before its handlers: it held no message
            self.exit_codes.append(code)
            slot.done = True
            return
        if lived >= _HEALTHY_AFTER:
            slot.backoff = _BACKOFF_MIN
        log.warning("pool: worker %d (pid %d) died (%d) after %.1fs; restarting in %.1fs",
                    slot.index, slot.proc.pid, code, lived, slot.backoff)
        slot.restart_at = time.monotonic() + slot.backoff
        slot.backoff = min(slot.backoff * 2, _BACKOFF_MAX)


def worker_command(module: str, argv_tail: Sequence[str]) -> list[str]:
    """The argv of one pool child."""
    return [sys.executable, "-m", "starlingpy", "work", module, *argv_tail, "--instances", "1"]
