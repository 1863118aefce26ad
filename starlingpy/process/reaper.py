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

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


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


def is_subreaper() -> bool:
    """Whether this process is a child subreaper already (False where unknown)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        return libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and bool(flag.value)
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def adopting_orphans() -> Iterator[bool]:
    """Be a child subreaper for the block (yields whether we are), and
    stop being one after it unless we were before."""
    already = is_subreaper()
    adopting = already or become_subreaper()
    try:
        yield adopting
    finally:
        if adopting and not already:
            prctl(PR_SET_CHILD_SUBREAPER, 0)


def reap_group(leader: int, timeout: float = 5.0, proc: Path = Path("/proc")) -> int:
    """SIGKILL the process group of ``leader`` (our exited, not yet reaped
    child: while it is a zombie its pid, the group id, cannot be reused)
    until only the leader is left, reaping the members that became our
    children (orphans a subreaper adopts); returns how many. Gives up after
    ``timeout`` s (members another live parent must reap)."""
    reaped = 0
    deadline = time.monotonic() + timeout
    me, group = str(os.getpid()), str(leader)
    while True:
        try:
            os.killpg(leader, signal.SIGKILL)
        except ProcessLookupError:
            return reaped
        others = False
        for pid, stat in _stats(proc):
            # [state, ppid, pgrp, ...]: in the group, besides the leader.
            if stat[2] != group or pid == leader:
                continue
            others = True
            if stat[1] == me and stat[0] == "Z":
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        reaped += 1
                except ChildProcessError:
                    pass
        if not others or time.monotonic() > deadline:
            return reaped
        time.sleep(0.005)


def _stats(proc: Path) -> Iterator[tuple[int, list[str]]]:
    """``(pid, [state, ppid, pgrp, ...])`` of every process."""
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            yield int(entry.name), stat.rsplit(")", 1)[-1].split()


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
