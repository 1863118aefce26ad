"""A task module for the worker subprocess tests. Tasks leave marker files
in $SAMPLE_MARKS so the test can see what ran where."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from starlingpy.worker import Retry, TaskSet

tasks = TaskSet("sample")
MARKS = Path(os.environ.get("SAMPLE_MARKS", "."))


@tasks.task(queue="slow")
def hold(tag: str) -> None:
    """Runs until the test creates release-<tag> (bounded: 60 s)."""
    (MARKS / f"started-{tag}-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not (MARKS / f"release-{tag}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"release-{tag} never came")
        time.sleep(0.01)
    (MARKS / f"done-{tag}-{os.getpid()}").touch()


@tasks.task(queue="fast")
def note(tag: str) -> None:
    (MARKS / f"note-{tag}-{os.getpid()}").touch()


@tasks.task(queue="fast", max_attempts=2)
def explode(tag: str) -> None:
    raise RuntimeError(f"explode {tag}")


@tasks.task(queue="fast")
def whoami(tag: str) -> None:
    index = os.environ.get("STARLINGPY_WORKER_INDEX", "none")
    (MARKS / f"whoami-{tag}-{index}-{os.getpid()}").touch()


@tasks.task(queue="fast")
def relay(tag: str) -> None:
    """Pushes a task from inside a worker (this set has no client_factory):
    it must reach the worker's own server."""
    note.push(f"relayed-{tag}")


@tasks.task(queue="fast")
def orphan(tag: str) -> None:
    """Leaves an orphan: ``sh`` starts a sleeper in the background and exits."""
    started = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
                             capture_output=True, text=True, check=True, timeout=30)
    (MARKS / f"orphan-{tag}-{started.stdout.strip()}").touch()


@tasks.task(queue="fast", max_attempts=1)
def flaky(tag: str) -> None:
    """Fails until the test creates fixed-<tag> (then a retry succeeds)."""
    if not (MARKS / f"fixed-{tag}").exists():
        raise RuntimeError(f"flaky {tag} is not fixed yet")
    (MARKS / f"flaky-{tag}-{os.getpid()}").touch()


@tasks.task(queue="timed", timeout=0.5)
def hang(tag: str) -> None:
    """Sleeps far past its timeout (a network call with none of its own)."""
    (MARKS / f"hang-{tag}-{os.getpid()}").touch()
    time.sleep(60)


@tasks.task(queue="timed", timeout=0.5, retry=Retry(max_attempts=2))
def spin_in_c(tag: str) -> None:
    """Loops in C code that never looks at signals (the builtin ``sum`` over
    a range): only the kernel's CPU limit ends it, with its process."""
    (MARKS / f"spin-{tag}-{os.getpid()}").touch()
    sum(range(10**15))


@tasks.task(queue="fast", retry=Retry(max_attempts=3, intervals=[0.3, 0.6]))
def backing_off(tag: str) -> None:
    """Always fails; writes when each attempt ran."""
    (MARKS / f"attempt-{tag}-{time.time():.6f}").touch()
    raise RuntimeError(f"backing_off {tag}")


@tasks.task(queue="fast", unique=lambda submission_id: submission_id)
def grade_once(submission_id: int) -> None:
    (MARKS / f"graded-{submission_id}-{os.getpid()}").touch()
