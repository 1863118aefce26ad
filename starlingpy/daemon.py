"""Detaching from the terminal, and pid files.

``daemonize()`` double-forks with ``setsid`` in between (so the daemon is no
session leader and can never reacquire a terminal) and keeps a pipe back to
the original process, which waits until the daemon says it is ready (or
why it failed) and exits with that status: an init script that runs
``starlingpy serve -d`` knows the server answers once the command returns.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Callable


def daemonize(log_path: Path | None = None, ready_timeout: float = 60.0) -> Callable[[str | None], None]:
    """Detach; in the daemon, return ``notify(error)`` to call once ready or failed."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:  # the original process: wait for the verdict
        os.close(write_end)
        message = b""
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read()
        text = message.decode(errors="replace")
        if text.startswith("ok"):
            sys.stdout.write(text[2:])
            sys.stdout.flush()
            os._exit(0)
        sys.stderr.write(text or "daemon exited before it was ready\n")
        os._exit(1)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    _redirect_stdio(log_path)

    def notify(error: str | None, detail: str = "") -> None:
        nonlocal write_end
        if write_end < 0:
            return
        try:
            os.write(write_end, (f"error: {error}\n" if error else f"ok{detail}").encode())
        finally:
            os.close(write_end)
            write_end = -1

    return notify


def _redirect_stdio(log_path: Path | None) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    target = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if log_path else devnull
    os.dup2(target, 1)
    os.dup2(target, 2)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class PidFileError(Exception):
    pass


def write_pidfile(path: Path, pid: int | None = None) -> None:
    """Write our pid atomically; refuse if a live process already owns the file."""
    existing = read_pidfile(path)
    if existing and existing != os.getpid() and pid_alive(existing):
        raise PidFileError(f"{path} names a running process ({existing})")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{pid or os.getpid()}\n")
    os.replace(temporary, path)


def remove_pidfile(path: Path) -> None:
    if read_pidfile(path) == os.getpid():
        path.unlink(missing_ok=True)
