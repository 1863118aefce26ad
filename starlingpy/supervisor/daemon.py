"""Detach from the terminal the classic way: fork, ``setsid``, fork again,
stdio to a log file, and report start-up success or failure back to the
process that typed the command.

The original process waits on a pipe: the daemon writes ``ok`` once the tier
answers, or the error, so ``starlingpy up`` exits 0 only when the tier is
really up and otherwise prints why.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path


def daemonize(log_path: Path) -> Callable[[str | None], None]:
    """Fork into a daemon. Returns (in the daemon) the function to call once
    start-up finished: ``report(None, summary)`` for success (the summary is
    printed by the waiting process), ``report(message)`` for failure. The original process never returns: it exits 0 on success and
    1 (after printing the message) on failure.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os.close(write_end)
        _wait_for_report(read_end)  # never returns
    # First child: a new session without a controlling terminal ...
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)  # ... whose leader leaves, so we can never get a terminal again.
    os.chdir("/")
    _redirect_stdio(log_path)

    def report(error: str | None, summary: str = "") -> None:
        text = f"ok\n{summary}" if error is None else error
        try:
            os.write(write_end, text.encode() + b"\n")
            os.close(write_end)
        except OSError:
            pass  # the waiting process is gone; nothing to tell

    return report


def _wait_for_report(read_end: int) -> None:
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    try:
        os.wait()  # reap the first child, which exited at once
    except ChildProcessError:
        pass
    message = b"".join(chunks).decode(errors="replace").strip()
    if message.partition("\n")[0] == "ok":
        summary = message.partition("\n")[2]
        if summary:
            sys.stdout.write(summary + "\n")
            sys.stdout.flush()
        os._exit(0)
    sys.stderr.write((message or "the supervisor died during start-up") + "\n")
    sys.stderr.flush()
    os._exit(1)


def _redirect_stdio(log_path: Path) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
