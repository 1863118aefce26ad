"""Reap orphans: become the "child subreaper" of our process tree.

A grader kills a submitted program's process group; the dead grandchildren
are orphans. Without a subreaper they go to PID 1, and in a container PID 1
often never reaps them: the zombies pile up and, since zombies still count
against ``RLIMIT_NPROC``, soon no program of that uid can start. With
``PR_SET_CHILD_SUBREAPER`` they come to us instead, and we reap every zombie
child that is not one of ours to wait for.

Used by the supervisor (which waits for the processes it manages itself)
and by ``starlingpy work`` (which reaps between messages, when no task can
be waiting for a child of its own).
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> bool:
    """Linux ``prctl(option, value)``; False where it failed or does not exist."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Ask Linux to give us our descendants' orphans; False where unsupported."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def children(parent: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """``{pid: state letter}`` of ``parent``'s children (``Z``: waits to be reaped)."""
    found = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 2 and fields[1] == str(parent):
            found[int(entry.name)] = fields[0]
    return found


def zombie_children(parent: int, proc: Path = Path("/proc")) -> list[int]:
    """Pids of ``parent``'s children that have exited and wait to be reaped."""
    return [pid for pid, state in children(parent, proc).items() if state == "Z"]


def reap_orphans(managed: Callable[[], Iterable[int]] = tuple) -> int:
    """Reap our zombie children except the pids ``managed()`` names (they are
    waited for by their owners); returns how many."""
    keep = set(managed())
    reaped = 0
    for pid in zombie_children(os.getpid()):
        if pid in keep:
            continue
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped += 1
        except ChildProcessError:
            pass
    return reaped


def kill_adopted(managed: Iterable[int] = (), timeout: float = 5.0) -> int:
    """SIGKILL and reap every child that is not ``managed``: orphans we
    adopted that still run (say, the program of a worker killed mid-grading).
    Called last on shutdown, so nothing of the tier outlives it."""
    keep = set(managed)
    strays = [pid for pid in children(os.getpid()) if pid not in keep]
    for pid in strays:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in strays:
        while True:  # bounded by the deadline; SIGKILL is prompt
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid or time.monotonic() > deadline:
                    break
            except ChildProcessError:
                break
            time.sleep(0.01)
    return len(strays)


class PeriodicReaper:
    """``reap_orphans`` at most once every ``interval`` seconds, for a loop
    that calls it far more often (a worker between messages): a /proc scan
    is not free, and a zombie can wait a moment."""

    def __init__(self, managed: Callable[[], Iterable[int]] = tuple, interval: float = 0.5) -> None:
        self.managed = managed
        self.interval = interval
        self._last = float("-inf")

    def __call__(self) -> int:
        now = time.monotonic()
        if now - self._last < self.interval:
            return 0
        self._last = now
        return reap_orphans(self.managed)
