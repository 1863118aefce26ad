"""Periodic jobs: ``tasks.every(timedelta(minutes=5), task, ...)`` and
``tasks.cron("0 3 * * *", task, ...)``, enqueued by exactly one scheduler
among every worker process of the task set, on any number of machines.

The lock is an open item. Every worker runs a :class:`Scheduler` thread.
Each one makes sure the lock item exists (``set <set>_scheduler/unique=leader``:
the server stores at most one, waiting or open) and waits for it with a
reliable read (``get <set>_scheduler/t=.../open``). The one that gets it is
the leader and holds it open on its connection for as long as it lives.
When it dies (SIGKILL, a lost machine), the server sees its connection drop
and puts the item back, which wakes a waiting candidate at once: fail-over
takes as long as the server takes to see the connection gone (at once for a
killed process; for a machine cut off without a TCP reset, the kernel's
keep-alive time) plus one blocking-get round trip. A leader that loses its
connection (the server restarted) steps down at its next tick (at most
``TICK`` seconds) and competes again.

Run times and state: an ``every`` job runs at the multiples of its interval
since the epoch, a cron job at its expression's times in UTC. The leader
keeps, per job, the last run time it enqueued, in the queue
``<set>_scheduler_state`` (one JSON item, rewritten after each run: set the
new one, then take the old). A new leader reads it, and for a job whose
runs fell due while no scheduler lived, enqueues *one* run (the latest due
time), not one per missed period. A job never seen before starts with its
next run time. Each run is a message with ``scheduled_for`` set and a unique
id of its job and time, so a run enqueued twice (a leader dying between
enqueueing and saving its state) is refused while the first is still
queued or running. The server in a multi-server client is the one the
lock's id maps to (see ``Client.set``'s ``unique``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from croniter import croniter

from starlingpy.backoff import Backoff
from starlingpy.client import ClientError
from starlingpy.worker.tasks import Task, TaskMessage, TaskSet

__all__ = ["Schedule", "Scheduler"]

log = logging.getLogger("starlingpy.worker.schedule")

TICK = 1.0  # seconds between a leader's looks at its lock and the clock, at most
LOCK_WAIT = 2.0  # seconds one blocking get for the lock waits (a stop waits that long at most)


@dataclass(frozen=True)
class Schedule:
    """One periodic job: ``task(*args, **kwargs)`` every ``interval``
    seconds, or at the times of the cron ``expression``. ``key`` names it in the state."""

    task: Task
    args: tuple
    kwargs: dict
    interval: float | None = None
    expression: str | None = None  # cron
    key: str = field(default="", compare=False)

    @classmethod
    def every(cls, interval: timedelta | float, task: Task, args: tuple = (),
              kwargs: dict | None = None) -> Schedule:
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 1:
            raise ValueError(f"interval must be at least one second, got {interval!r}")
        return cls._made(task, args, kwargs, interval=float(seconds))

    @classmethod
    def cron(cls, expression: str, task: Task, args: tuple = (),
             kwargs: dict | None = None) -> Schedule:
        if not isinstance(expression, str) or not croniter.is_valid(expression):
            raise ValueError(f"not a cron expression: {expression!r}")
        return cls._made(task, args, kwargs, expression=expression)

    @classmethod
    def _made(cls, task: Task, args: tuple, kwargs: dict | None, **when) -> Schedule:
        kwargs = dict(kwargs or {})
        task.message(*args, **kwargs)  # JSON-able arguments: fail here, not in the scheduler
        spec = (f"every {when['interval']:g}s" if "interval" in when
                else f"cron {when['expression']}")
        arguments = json.dumps([list(args), kwargs], sort_keys=True)
        return cls(task, tuple(args), kwargs, key=f"{task.name} {spec} {arguments}", **when)

    def next_after(self, t: float) -> float:
        """The first run time strictly after ``t``."""
        if self.interval is not None:
            return (math.floor(t / self.interval) + 1) * self.interval
        return croniter(self.expression, datetime.fromtimestamp(t, UTC)).get_next(float)

    def latest_until(self, t: float) -> float:
        """The last run time at or before ``t``."""
        if self.interval is not None:
            return math.floor(t / self.interval) * self.interval
        before = croniter(self.expression, datetime.fromtimestamp(t, UTC)).get_prev(float)
        after = self.next_after(before)  # (t itself, when t is a run time)
        return after if after <= t else before

    def message(self, run: float) -> TaskMessage:
        digest = hashlib.sha256(f"{self.key}@{run!r}".encode()).hexdigest()
        return TaskMessage(task=self.task.name, args=self.args, kwargs=self.kwargs,
                           unique=f"run:{digest[:40]}", scheduled_for=run)


class Scheduler:
    """Competes for the scheduler lock of ``taskset`` and, while it holds
    it, enqueues the task set's periodic jobs. :meth:`run` until ``stop``
    is set (a thread of every worker; see the module docstring).
    ``clock``: unix time (tests inject one); ``tick``: seconds between a
    leader's looks at its lock and the clock, at most."""

    def __init__(self, taskset: TaskSet, client, stop: threading.Event, *,
                 clock: Callable[[], float] = time.time, name: str = "",
                 tick: float = TICK) -> None:
        self.taskset = taskset
        self.client = client
        self.stop = stop
        self.clock = clock
        self.name = name or taskset.name
        self.lock_queue = f"{taskset.name}_scheduler"
        self.state_queue = f"{taskset.name}_scheduler_state"
        self.tick = tick
        self.ticks = 0  # a leader's looks so far (tests wait on it)
        self.leading = threading.Event()  # set while this one is the leader
        self._state_saved = False  # a state item of this leadership is in the queue

    def run(self) -> None:
        backoff = Backoff(0.25, 5.0)
        while not self.stop.is_set():
            try:
                self.client.set(self.lock_queue, "scheduler lock", unique="leader")
                with self.client.hold(self.lock_queue, timeout=LOCK_WAIT) as lease:
                    if lease is not None:
                        self._lead(lease)
                backoff.reset()
            except ClientError as exc:
                self.leading.clear()
                delay = backoff.next_delay()
                log.warning("scheduler %s: %s; trying again in %.2fs", self.name, exc, delay)
                self.stop.wait(delay)

    def _lead(self, lease: Callable[[], bool]) -> None:
        log.info("scheduler %s (pid %d): leading (%d periodic jobs)", self.name, os.getpid(),
                 len(self.taskset.schedules))
        self.leading.set()
        try:
            last = self._load_state()
            self._state_saved = False
            now = self.clock()
            for schedule in self.taskset.schedules:
                last.setdefault(schedule.key, now)  # new: from its next run on
            self._save_state(last)
            while not self.stop.is_set() and lease():
                now = self.clock()
                if self._enqueue_due(last, now):
                    self._save_state(last)
                self.ticks += 1
                upcoming = min((s.next_after(last[s.key]) for s in self.taskset.schedules),
                               default=now + self.tick)
                self.stop.wait(min(self.tick, max(0.0, upcoming - self.clock())))
        finally:
            self.leading.clear()
            log.info("scheduler %s: no longer leading", self.name)

    def _enqueue_due(self, last: dict[str, float], now: float) -> bool:
        """Enqueue each job's latest run time that fell due since its last
        run: one run however many were missed. True if any was."""
        enqueued = False
        for schedule in self.taskset.schedules:
            if schedule.next_after(last[schedule.key]) > now:
                continue
            run = schedule.latest_until(now)
            task = schedule.task
            stored = self.taskset.send(task.queue, schedule.message(run), client=self.client)
            log.info("scheduler %s: %s %s for %s", self.name,
                     "enqueued" if stored else "already queued:", task.name,
                     datetime.fromtimestamp(run, UTC).isoformat())
            last[schedule.key] = run
            enqueued = True
        return enqueued

    def _load_state(self) -> dict[str, float]:
        """Every state item taken, merged (more than one: a leader died
        between writing the new one and taking the old)."""
        last: dict[str, float] = {}
        while (message := self.client.get_first([self.state_queue])) is not None:
            try:
                saved = json.loads(message.raw)["last"]
            except (ValueError, KeyError, TypeError):
                log.warning("scheduler %s: dropped a state item that is not ours", self.name)
                continue
            for key, run in saved.items():
                if isinstance(run, (int, float)) and run > last.get(key, -math.inf):
                    last[key] = float(run)
        return last

    def _save_state(self, last: dict[str, float]) -> None:
        """The new state item first, then the old one taken: a crash in
        between leaves both, which the next leader merges."""
        self.client.set(self.state_queue, {"last": last})
        if self._state_saved:
            self.client.get_first([self.state_queue])
        self._state_saved = True
