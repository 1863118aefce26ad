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
   server gives it back when the dead process's connection drops. The
   worker that gets it finds, in the :class:`AttemptLedger`, that this
   attempt started before, and counts it as failed (retried or sent to the
   failure queue) without running it again: a message that hangs in C costs
   one process per attempt. Cost per message: two ``setrlimit`` and one
   ``getrusage`` call, and the ledger's two round trips.

Both only in the main thread (where the worker loop runs) of a Unix process;
elsewhere :func:`time_limit` is a no-op with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import resource
import signal
import threading
from collections.abc import Iterator

__all__ = ["TaskTimeout", "time_limit", "HARD_GRACE", "AttemptLedger"]

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


# How long a timed attempt's start is remembered: a message given back later
# than this after its worker died is run again as the same attempt.
ATTEMPT_MEMORY = 3600


class AttemptLedger:
    """Remembers, on the queue server, which timed attempts have started, so
    that one whose worker died in it (killed in C code past its timeout, see
    the module docstring) is counted as a failed attempt when the reliable
    read gives it back, instead of hanging every worker it reaches.

    A start is a marker item in ``queue`` with a unique id made of the
    message's id, attempt and enqueue time, expiring after
    :data:`ATTEMPT_MEMORY` s; the server refuses a second one. A ``peek``
    after each start drops the expired markers at the queue's head. Cost per
    timed message: two round trips to the server.
    """

    def __init__(self, client, queue: str) -> None:
        self.client = client
        self.queue = queue

    def first_start(self, message) -> bool:
        """Note that ``message`` (a TaskMessage) starts now; False if this
        attempt had started before. True on a server without unique items."""
        from starlingpy.client import UnsupportedFeature

        stamp = f"{message.id}\0{message.attempt}\0{message.enqueued_at!r}".encode()
        key = "attempt:" + hashlib.sha256(stamp).hexdigest()[:40]
        try:
            first = self.client.set(self.queue, b"", ATTEMPT_MEMORY, unique=key)
        except UnsupportedFeature:
            return True
        self.client.peek(self.queue)  # drops expired markers at the head
        return first
