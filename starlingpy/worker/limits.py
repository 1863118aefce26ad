"""Task timeouts: ``@task(timeout=30)``.

Two layers, because Python can only interrupt Python:

1. **A timer signal** (``SIGALRM`` through ``setitimer``) raises
   :class:`TaskTimeout` inside the task when its time is up. Python code,
   and C calls that give way to signals (``time.sleep``, socket reads,
   ``subprocess`` waits), stop there; the worker counts a failed attempt
   (retried or sent to the failure queue like any failure) and goes on with
   the next message. Cost per message: two ``setitimer`` calls.
2. **A CPU limit** (``RLIMIT_CPU``, soft) of the CPU time used so far plus
   the timeout plus :data:`HARD_GRACE` (5 s, or
   ``$STARLINGPY_TASK_HARD_GRACE``): a task spinning in C code that never
   looks at signals (``sum`` over a huge range, a C extension's
   loop) is killed by the kernel (``SIGXCPU``). That costs the worker
   process: the pool starts a new one (its restart back-off), and since
   the message was taken with a reliable read and never confirmed, the
   server gives it back when the dead process's connection drops. It comes
   back with the same attempt number, so a message that hangs in C every
   time costs a process on every delivery (see the README). Cost per
   message: two ``setrlimit`` and one ``getrusage`` call.

Both only in the main thread (where the worker loop runs) of a Unix process;
elsewhere :func:`time_limit` is a no-op with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import signal
import threading
from collections.abc import Iterator

__all__ = ["TaskTimeout", "time_limit", "HARD_GRACE"]

log = logging.getLogger("starlingpy.worker")

# CPU seconds past the timeout before the kernel ends a task stuck in C
HARD_GRACE = float(os.environ.get("STARLINGPY_TASK_HARD_GRACE", "5"))


class TaskTimeout(BaseException):
    """A task ran past its ``timeout``. Not an ``Exception``, so the task's
    own ``except Exception`` does not swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TaskTimeout` in the block after ``seconds`` (None: no limit)."""
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        log.warning("task timeout of %ss not enforced outside the main thread", seconds)
        yield
        return

    def expired(signum, frame):
        raise TaskTimeout(f"task ran past its timeout of {seconds}s")

    previous_handler = signal.signal(signal.SIGALRM, expired)
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_cap = math.ceil(usage.ru_utime + usage.ru_stime + seconds + HARD_GRACE)
    if hard != resource.RLIM_INFINITY:
        cpu_cap = min(cpu_cap, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_cap, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        signal.signal(signal.SIGALRM, previous_handler)
