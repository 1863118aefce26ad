"""Reap orphans: the supervisor is the "child subreaper" of its tree.

A grader kills a submitted program's process group; the dead grandchildren
are orphans. Without a subreaper they go to PID 1, and in a container PID 1
often never reaps them: the zombies pile up and, since zombies still count
against ``RLIMIT_NPROC``, soon no program of that uid can start. With
``PR_SET_CHILD_SUBREAPER`` they come to us, and we reap every zombie child
that is not one of the processes we supervise (those are waited for by
their own tasks).
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Ask Linux to give us our descendants' orphans; False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


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


def reap_orphans(managed: Callable[[], Iterable[int]]) -> int:
    """Reap our zombie children except ``managed`` pids; returns how many."""
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


def kill_adopted(managed: Iterable[int], timeout: float = 5.0) -> int:
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
