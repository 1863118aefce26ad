"""The one process-supervision layer: a child process kept alive (restarted
after a back-off when it dies, given up on in a crash loop) and stopped
gracefully. Used by the supervisor (the server and every worker instance)
and by ``starlingpy work --instances N`` (its N workers).

Resource handling: the child gets its own process group (so a Ctrl-C on the
parent's terminal reaches only the parent, which then stops children in
order), stdin from /dev/null, stdout and stderr appended to its log file (or
the parent's own, without one), and no file descriptor of ours besides those
(and the readiness pipe, for a child that reports readiness).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from starlingpy.backoff import RestartPolicy
from starlingpy.process.daemon import READY_FD_OPTION, read_report
from starlingpy.process.pidfile import remove_pid, write_pid
from starlingpy.process.reaper import kill_adopted, reap_orphans

log = logging.getLogger("starlingpy.process")

REAP_INTERVAL = 0.5  # s between scans for orphaned zombies


@dataclass
class ProcessRecord:
    """One supervised process as ``status`` shows it."""

    name: str
    kind: str  # "server" | "worker"
    pid: int | None = None
    started_at: float | None = None  # unix time of the current run's start
    restarts: int = 0
    state: str = "starting"  # starting | running | backoff | crash-loop | finished | stopping | stopped
    last_exit: str | None = None  # "exit status 1", "signal 9"


def describe_exit(returncode: int) -> str:
    """``"signal 9"`` or ``"exit status 1"``, as people read it."""
    return f"signal {-returncode}" if returncode < 0 else f"exit status {returncode}"


class ManagedProcess:
    """A child kept alive.

    ``run`` is the task that owns it: it starts the child, waits for it,
    and restarts it after the policy's delay until ``stop`` is called or the
    policy declares a crash loop. A child that exits 0 on its own is not
    restarted when ``restart_on_success`` is False (a worker in burst mode).
    ``on_change`` is called whenever the record changes, so a state file
    can follow. ``log_path`` None: the child writes to our stdout/stderr;
    ``pid_path`` None: no pid file. ``reports_ready``: each start passes
    the child ``--ready-fd FD`` (see :mod:`starlingpy.process.daemon`), and
    :meth:`wait_ready` reads its report.
    """

    def __init__(self, record: ProcessRecord, argv: Sequence[str], *, env: dict[str, str],
                 policy: RestartPolicy, cwd: Path | None = None, log_path: Path | None = None,
                 pid_path: Path | None = None, on_change: Callable[[], None] = lambda: None,
                 restart_on_success: bool = True, reports_ready: bool = False) -> None:
        self.record = record
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.log_path = log_path
        self.pid_path = pid_path
        self.policy = policy
        self.on_change = on_change
        self.restart_on_success = restart_on_success
        self.reports_ready = reports_ready
        self.process: trio.Process | None = None
        self.stopping = False
        self._ready_read: trio.lowlevel.FdStream | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._exited = trio.Event()
        # True while a child is being created but not yet known by pid (the
        # orphan reaper must not take it for a stranger).
        self.spawning = False

    @property
    def name(self) -> str:
        return self.record.name

    def _set(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self.record, key, value)
        self.on_change()

    async def _spawn(self) -> None:
        argv, pass_fds, ready_write = self.argv, (), None
        if self.reports_ready:
            if self._ready_read is not None:
                await self._ready_read.aclose()  # an earlier run's report nobody waited for
            read_end, ready_write = os.pipe()
            self._ready_read = trio.lowlevel.FdStream(read_end)
            argv, pass_fds = [*argv, READY_FD_OPTION, str(ready_write)], (ready_write,)
        self.spawning = True
        try:
            if self.log_path is None:
                self.process = await trio.lowlevel.open_process(
                    argv, stdin=subprocess.DEVNULL, cwd=self.cwd, env=self.env, process_group=0,
                    close_fds=True, pass_fds=pass_fds)
            else:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                # A local append-only file opens at once; no thread needed.
                with open(self.log_path, "ab") as log_file:  # noqa: ASYNC230
                    self.process = await trio.lowlevel.open_process(
                        argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                        cwd=self.cwd, env=self.env, process_group=0, close_fds=True,
                        pass_fds=pass_fds)
        finally:
            self.spawning = False
            if ready_write is not None:
                os.close(ready_write)  # the child's now: EOF on our end once it reported or died
        if self.pid_path is not None:
            write_pid(self.pid_path, self.process.pid)
        self._set(pid=self.process.pid, started_at=time.time(), state="running")
        log.info("%s: started, pid %d", self.name, self.process.pid)

    async def wait_ready(self) -> str:
        """The summary the current run reported once ready; RuntimeError with
        its message if it reported a failure or exited first."""
        error, summary = read_report(await _read_all(self._ready_read))
        await self._ready_read.aclose()
        self._ready_read = None
        if error is not None:
            raise RuntimeError(error)
        return summary

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Keep the child alive until :meth:`stop`; reports once first started."""
        try:
            await self._spawn()
            task_status.started()
            while True:
                started = trio.current_time()
                returncode = await self.process.wait()
                if self.pid_path is not None:
                    remove_pid(self.pid_path)
                exit_text = describe_exit(returncode)
                if self.stopping:
                    self._set(state="stopped", pid=None, last_exit=exit_text)
                    log.info("%s: stopped (%s)", self.name, exit_text)
                    return
                if returncode == 0 and not self.restart_on_success:
                    self._set(state="finished", pid=None, last_exit=exit_text)
                    log.info("%s: finished (%s)", self.name, exit_text)
                    return
                delay = self.policy.next_delay(started, trio.current_time())
                if delay is None:
                    self._set(state="crash-loop", pid=None, last_exit=exit_text)
                    log.error("%s: died (%s) %d times within %.0f s: crash loop, not restarting%s",
                              self.name, exit_text, self.policy.loop_restarts + 1,
                              self.policy.loop_window, f"; see {self.log_path}" if self.log_path else "")
                    return
                self._set(state="backoff", pid=None, last_exit=exit_text)
                log.warning("%s: died (%s), restarting in %.1f s", self.name, exit_text, delay)
                with trio.CancelScope() as self._wait_scope:
                    await trio.sleep(delay)
                if self.stopping:
                    self._set(state="stopped")
                    return
                self._set(restarts=self.record.restarts + 1)
                await self._spawn()
        finally:
            if self._ready_read is not None:
                self._ready_read.close()
                self._ready_read = None
            self._exited.set()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child if it still runs."""
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass

    def exit_ok(self) -> bool:
        """Whether the last run ended well: exit 0, or our own SIGTERM during
        a stop (it came before the child's handlers were in place)."""
        code = self.process.returncode if self.process is not None else None
        return code == 0 or (self.stopping and code == -signal.SIGTERM)

    async def stop(self, grace: float, *, warm_then_cold: bool = True) -> None:
        """Stop for good: SIGTERM (warm); after ``grace`` s a second SIGTERM
        (cold, for workers); after a few more seconds, SIGKILL."""
        self.stopping = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()
        if not self._exited.is_set():
            self._set(state="stopping")
        self.signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            await self._exited.wait()
            return
        if warm_then_cold:
            log.warning("%s: still busy after %.1f s, stopping it cold", self.name, grace)
            self.signal(signal.SIGTERM)
            with trio.move_on_after(5):
                await self._exited.wait()
                return
        log.error("%s: did not stop, killing it", self.name)
        self.signal(signal.SIGKILL)
        await self._exited.wait()

    def bounce(self, nursery: trio.Nursery) -> None:
        """Restart the child now: a warm stop, then the usual restart. A
        child given up on (crash loop) gets a fresh start in ``nursery``."""
        self.policy.reset()
        if self._exited.is_set() and not self.stopping:
            self._exited = trio.Event()
            self.record.restarts += 1
            nursery.start_soon(self.run)
            return
        self.signal(signal.SIGTERM)

    def read_new_output(self) -> str:
        """The tail of the log file (what the child wrote last), for error messages."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(max(0, log_file.seek(0, os.SEEK_END) - 2000))
                return log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None


async def _read_all(stream: trio.lowlevel.FdStream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def managed_pids(processes: Sequence[ManagedProcess]) -> list[int]:
    """The pids our ManagedProcess objects wait for themselves."""
    return [p.process.pid for p in processes if p.process is not None]


async def reap_orphans_forever(processes: Callable[[], Sequence[ManagedProcess]]) -> None:
    """As a subreaper: reap zombie orphans that are none of ``processes()``."""
    while True:
        current = processes()
        if not any(p.spawning for p in current):
            reap_orphans(partial(managed_pids, current))
        await trio.sleep(REAP_INTERVAL)


def kill_strays(processes: Sequence[ManagedProcess]) -> None:
    """Last step of a stop: kill what adopted orphans still run."""
    if strays := kill_adopted(managed_pids(processes)):
        log.info("killed %d orphaned process(es) left by the workers", strays)


PARENT_CHECK_SECONDS = 1.0


def die_with_parent(parent_pid: int) -> None:
    """In a child: get SIGTERM (a warm stop) within a second of the parent's
    death; exit now if it is already gone.

    Not ``PR_SET_PDEATHSIG``: that fires when the parent *thread* that
    spawned us exits, and trio spawns children from worker threads that
    retire after ten idle seconds, which stopped every pool worker then.
    """
    if os.getppid() != parent_pid:
        raise SystemExit(0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# The directory holding the starlingpy package we run: children must import
# the same one, whatever their working directory (an editable install's
# import hook alone does not guarantee that).
_OUR_ROOT = Path(__file__).resolve().parents[2]


def child_env(extra: dict[str, str], python_path: Path | None = None) -> dict[str, str]:
    """Our environment plus ``extra``, unbuffered output, and on PYTHONPATH
    first ``python_path`` (the pool's directory), then our own package."""
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(python_path) if python_path else "", str(_OUR_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    return env
