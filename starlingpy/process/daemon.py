"""Detaching from the terminal the classic way, for ``starlingpy serve -d``
and ``starlingpy up``: fork, ``setsid``, fork again (so the daemon is no
session leader and can never reacquire a terminal), stdin from /dev/null,
stdout and stderr to a log file.

The original process waits on a pipe until the daemon reports that start-up
finished (or why it failed) and exits with that status: an init script that
runs ``starlingpy serve -d`` knows the server answers once the command
returns, and ``starlingpy up`` exits 0 only when the tier is really up.

The same report, on a pipe a parent passes as ``--ready-fd FD``, tells the
supervisor when the server it started is ready (and on which port).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

READY_FD_OPTION = "--ready-fd"

def daemonize(log_path: Path | None = None) -> Callable[..., None]:
    """Fork into a daemon. Returns (in the daemon) the function to call once
    start-up finished: ``report(None, summary)`` for success (the waiting
    process prints the summary on stdout), ``report(message)`` for failure
    (printed on stderr). Only the first report counts.

    The original process never returns: it exits 0 on success and 1 on
    failure, or if the daemon died before reporting. Output goes to
    ``log_path`` (created, appended to), or nowhere without one.
    """
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    sys.stdout.flush()  # or buffered output would be written twice, once per process
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
    return reporter(write_end)


def reporter(write_end: int) -> Callable[..., None]:
    """The ``report(error, summary="")`` function writing to the pipe
    ``write_end``: ``report(None, summary)`` for success, ``report(message)``
    for failure. Only the first report counts; it closes the pipe."""
    os.set_inheritable(write_end, False)  # our own children must not hold it open
    pipe = [write_end]  # emptied by the first report

    def report(error: str | None, summary: str = "") -> None:
        if not pipe:
            return
        text = f"ok\n{summary}" if error is None else error
        try:
            os.write(pipe[0], text.encode() + b"\n")
        except OSError:
            pass  # the waiting process is gone; nothing to tell
        finally:
            os.close(pipe.pop())

    return report


def read_report(message: bytes) -> tuple[str | None, str]:
    """``(None, summary)`` for a success report, ``(error, "")`` for a
    failure; a pipe closed without a report is a failure too."""
    text = message.decode(errors="replace").strip()
    verdict, _, summary = text.partition("\n")
    if verdict == "ok":
        return None, summary
    return text or "the process exited before it was ready", ""


def _wait_for_report(read_end: int) -> None:
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    try:
        os.wait()  # reap the first child, which exited at once
    except ChildProcessError:
        pass
    error, summary = read_report(b"".join(chunks))
    if error is None:
        if summary:
            sys.stdout.write(summary + "\n")
            sys.stdout.flush()
        os._exit(0)
    sys.stderr.write(error + "\n")
    sys.stderr.flush()
    os._exit(1)


def _redirect_stdio(log_path: Path | None) -> None:
    # Nothing to flush: daemonize flushed before the first fork, printed nothing since.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    target = devnull
    if log_path is not None:
        target = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 1)
    os.dup2(target, 2)
    for fd in {devnull, target} - {0, 1, 2}:  # an fd of 0-2 (they were closed) is in use now
        os.close(fd)
