"""Pid files: write one atomically, read one back, tell a live process from a
stale file. Used by ``starlingpy serve -P`` and by the supervisor.

A pid file is stale when its process is gone (a zombie counts as gone), or,
when a ``marker`` is given, when the pid was reused by a process that is not
ours (on Linux we look for the marker, e.g. ``starlingpy``, in its command
line). Stale files are removed by whoever finds them.
"""

from __future__ import annotations

import os
from pathlib import Path


class PidFileError(Exception):
    """The pid file names another process that still runs."""


def write_pid(path: Path, pid: int) -> None:
    """Write ``pid`` to ``path`` atomically (temp file, then rename), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # 0600: only the owner reads who runs (and may signal) the server.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{pid}\n")
    os.replace(temp, path)


def read_pid(path: Path) -> int | None:
    """The pid in ``path``, or None if the file is missing or holds garbage."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """True if ``pid`` runs (and, with ``marker``, its command line has it).

    A zombie counts as dead: it has exited, only its parent hasn't reaped it.
    But a main thread shows as a zombie while the process's other threads
    are still exiting, and only the last one releases its files (and locks);
    so the process is dead only once every thread is.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours to judge
    proc = Path(f"/proc/{pid}")
    try:
        if all(_state(task / "stat") in ("Z", "X", None) for task in (proc / "task").iterdir()):
            return False
        if marker is not None:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            return marker.encode() in cmdline
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return not proc.parent.exists()  # no /proc at all: trust os.kill
    return True


def _state(stat_path: Path) -> str | None:
    """The state letter in a /proc stat file, None if the task is gone."""
    try:
        return stat_path.read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def live_pid(path: Path, marker: str | None = "starlingpy") -> int | None:
    """The pid in ``path`` if that process is alive; a stale file is removed."""
    pid = read_pid(path)
    if pid is not None and pid_alive(pid, marker):
        return pid
    remove_pid(path)
    return None


def remove_pid(path: Path) -> None:
    """Remove ``path`` if it exists."""
    path.unlink(missing_ok=True)


def claim_pid_file(path: Path, marker: str | None = None) -> None:
    """Write our own pid to ``path``; raise :class:`PidFileError` if the file
    names another process that is alive (a stale file is replaced).

    No marker by default: a server may run as ``server.py`` as well as
    ``starlingpy``, and refusing a pid that merely looks reused is safer than
    overwriting a live server's file.
    """
    existing = read_pid(path)
    if existing is not None and existing != os.getpid() and pid_alive(existing, marker):
        raise PidFileError(f"{path} names a running process ({existing})")
    write_pid(path, os.getpid())


def release_pid_file(path: Path) -> None:
    """Remove ``path`` if it still names this process (not a successor's)."""
    if read_pid(path) == os.getpid():
        remove_pid(path)
