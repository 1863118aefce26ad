"""One supervised child process: start it, restart it when it dies (with
back-off, giving up on a crash loop), stop it gracefully.

Resource handling: the child gets its own process group (so a Ctrl-C on the
supervisor's terminal reaches only the supervisor, which then stops children
in order), stdin from /dev/null, stdout and stderr appended to its log file,
and no file descriptor of ours besides those.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from starlingpy.pidfile import remove_pid, write_pid
from starlingpy.supervisor.backoff import RestartPolicy
from starlingpy.supervisor.state import ProcessRecord

log = logging.getLogger("starlingpy.supervisor")


def describe_exit(returncode: int) -> str:
    """``"signal 9"`` or ``"exit status 1"``, as people read it."""
    return f"signal {-returncode}" if returncode < 0 else f"exit status {returncode}"


class ManagedProcess:
    """A child the supervisor keeps alive.

    ``run`` is the task that owns it: it starts the child, waits for it,
    and restarts it after the policy's delay until ``stop`` is called or the
    policy declares a crash loop. ``on_change`` is called whenever the record
    changes, so the state file follows.
    """

    def __init__(self, record: ProcessRecord, argv: Sequence[str], *, cwd: Path,
                 env: dict[str, str], log_path: Path, pid_path: Path,
                 policy: RestartPolicy, on_change: Callable[[], None]) -> None:
        self.record = record
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.log_path = log_path
        self.pid_path = pid_path
        self.policy = policy
        self.on_change = on_change
        self.process: trio.Process | None = None
        self.log_offset = 0  # where the current run's output starts in the log
        self._stopping = False
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
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.spawning = True
        try:
            # A local append-only file opens at once; no thread needed.
            with open(self.log_path, "ab") as log_file:  # noqa: ASYNC230
                self.log_offset = log_file.tell()
                self.process = await trio.lowlevel.open_process(
                    self.argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                    cwd=str(self.cwd), env=self.env, process_group=0, close_fds=True)
        finally:
            self.spawning = False
        write_pid(self.pid_path, self.process.pid)
        self._set(pid=self.process.pid, started_at=time.time(), state="running")
        log.info("%s: started, pid %d", self.name, self.process.pid)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Keep the child alive until :meth:`stop`; reports once first started."""
        try:
            await self._spawn()
            task_status.started()
            while True:
                started = trio.current_time()
                returncode = await self.process.wait()
                remove_pid(self.pid_path)
                exit_text = describe_exit(returncode)
                if self._stopping:
                    self._set(state="stopped", pid=None, last_exit=exit_text)
                    log.info("%s: stopped (%s)", self.name, exit_text)
                    return
                delay = self.policy.next_delay(started, trio.current_time())
                if delay is None:
                    self._set(state="crash-loop", pid=None, last_exit=exit_text)
                    log.error("%s: died (%s) %d times within %.0f s: crash loop, not restarting;"
                              " see %s", self.name, exit_text, self.policy.loop_restarts + 1,
                              self.policy.loop_window, self.log_path)
                    return
                self._set(state="backoff", pid=None, last_exit=exit_text)
                log.warning("%s: died (%s), restarting in %.1f s", self.name, exit_text, delay)
                with trio.CancelScope() as self._wait_scope:
                    await trio.sleep(delay)
                if self._stopping:
                    self._set(state="stopped")
                    return
                self._set(restarts=self.record.restarts + 1)
                await self._spawn()
        finally:
            self._exited.set()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child if it still runs."""
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass

    async def stop(self, grace: float, *, warm_then_cold: bool = True) -> None:
        """Stop for good: SIGTERM (warm); after ``grace`` s a second SIGTERM
        (cold, for workers); after a few more seconds, SIGKILL."""
        self._stopping = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()
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
        if self._exited.is_set() and not self._stopping:
            self._exited = trio.Event()
            self.record.restarts += 1
            nursery.start_soon(self.run)
            return
        self.signal(signal.SIGTERM)

    def read_new_output(self) -> str:
        """What the current run wrote to its log so far."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(self.log_offset)
                return log_file.read(1 << 20).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None


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
