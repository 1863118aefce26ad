"""Periodic jobs: run times, one run for missed periods (an injected
clock), and exactly one scheduler among real worker processes, again after
the leader is SIGKILLed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest

from starlingpy.worker import TaskSet
from starlingpy.worker.schedule import Schedule, Scheduler
from starlingpy.worker.tasks import TaskMessage
from tests.support import REPO, wait_until
from tests.unit.conftest import T0, Clock


def test_run_times_of_intervals_and_cron_expressions():
    tasks = TaskSet("s")
    job = tasks.task(queue="q")(lambda: None)
    every = Schedule.every(timedelta(minutes=5), job)
    assert every.next_after(600.0) == 900.0 and every.next_after(601.0) == 900.0
    assert every.latest_until(899.9) == 600.0 and every.latest_until(900.0) == 900.0
    nightly = Schedule.cron("0 3 * * *", job)
    at_2 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC).timestamp()
    at_3 = datetime(2026, 5, 1, 3, 0, tzinfo=UTC).timestamp()
    assert nightly.next_after(at_2) == at_3 and nightly.next_after(at_3) == at_3 + 86400
    assert nightly.latest_until(at_3) == at_3 and nightly.latest_until(at_3 - 1) == at_3 - 86400
    with pytest.raises(ValueError):
        Schedule.cron("61 * * * *", job)
    with pytest.raises(ValueError):
        Schedule.every(timedelta(milliseconds=10), job)
    tasks.every(60, job, 1)
    with pytest.raises(ValueError):
        tasks.every(60, job, 1)  # the same job twice


def queued_runs(client, queue: str) -> list[float]:
    runs = []
    while (message := client.get_first([queue])) is not None:
        runs.append(TaskMessage.decode(message.raw).scheduled_for)
    return runs


class Running:
    """A Scheduler in a thread, on an injected clock."""

    def __init__(self, tasks, client, clock) -> None:
        self.stop = threading.Event()
        self.scheduler = Scheduler(tasks, client, self.stop, clock=clock, tick=0.02)
        self.thread = threading.Thread(target=self.scheduler.run, daemon=True)
        self.thread.start()
        wait_until(self.scheduler.leading.is_set, message="the scheduler leading")

    def settle(self, looks: int = 3) -> None:
        """Let the leader look at the clock a few more times."""
        seen = self.scheduler.ticks
        wait_until(lambda: self.scheduler.ticks >= seen + looks, message="scheduler ticks")

    def end(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_each_run_is_enqueued_once_and_missed_runs_once_in_all(client):
    tasks = TaskSet("clocked")
    job = tasks.task(queue="jobs")(lambda n: None)
    tasks.every(timedelta(minutes=1), job, 7)
    clock = Clock(T0 - T0 % 60 + 30)  # half-way through a minute
    first = Running(tasks, client, clock)
    first.settle()
    assert queued_runs(client, "jobs") == []  # new: from its next run time on
    clock.now += 30
    wait_until(lambda: client.sizeof("jobs") == 1, message="the first run")
    clock.now += 60
    first.settle()
    assert queued_runs(client, "jobs") == [clock.now - 60, clock.now]
    first.end()  # no scheduler for ten minutes
    clock.now += 600
    second = Running(tasks, client, clock)
    second.settle()
    assert queued_runs(client, "jobs") == [clock.now]  # one run for the ten missed
    second.settle()
    assert queued_runs(client, "jobs") == []
    second.end()


def test_one_of_two_schedulers_leads_and_the_other_takes_over(client):
    tasks = TaskSet("pair")
    job = tasks.task(queue="jobs2")(lambda: None)
    tasks.every(timedelta(minutes=1), job)
    clock = Clock(T0 - T0 % 60 + 1)
    one = Running(tasks, client, clock)
    stop = threading.Event()
    other = Scheduler(tasks, client, stop, clock=clock, tick=0.02)
    thread = threading.Thread(target=other.run, daemon=True)
    thread.start()
    one.settle()
    assert not other.leading.is_set()
    for _ in range(3):
        clock.now += 60
        one.settle()
    one.end()  # steps down: the other one gets the lock at once
    wait_until(other.leading.is_set, message="fail-over")
    clock.now += 60
    wait_until(lambda: client.sizeof("jobs2") == 4, message="the run after fail-over")
    runs = queued_runs(client, "jobs2")
    assert runs == [T0 - T0 % 60 + 60 * k for k in (1, 2, 3, 4)]
    stop.set()
    thread.join(10)


class Pool:
    """`starlingpy work tests.worker.periodic_tasks --instances 3`, log kept."""

    def __init__(self, server) -> None:
        cmd = [sys.executable, "-m", "starlingpy", "work", "tests.worker.periodic_tasks",
               "--server", server.address, "--queues", "idle", "--instances", "3",
               "--wait-timeout", "1"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log = bytearray()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.log += line

    def leaders(self) -> list[int]:
        return [int(pid) for pid in re.findall(rb"\(pid (\d+)\): leading", bytes(self.log))]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def test_three_workers_enqueue_each_run_once_and_again_after_the_leader_is_killed(server, client):
    pool = Pool(server)
    runs: list[float] = []
    try:
        leader = wait_until(pool.leaders, timeout=30, message="a leader")[0]
        wait_until(lambda: runs.extend(queued_runs(client, "periodic")) or len(runs) >= 3,
                   timeout=30, message="three runs")
        os.kill(leader, signal.SIGKILL)
        wait_until(lambda: len(pool.leaders()) >= 2, timeout=30, message="a new leader")
        killed_at = len(runs)
        wait_until(lambda: runs.extend(queued_runs(client, "periodic")) or len(runs) >= killed_at + 3,
                   timeout=30, message="runs after the fail-over")
    finally:
        pool.stop()
    runs += queued_runs(client, "periodic")
    assert pool.leaders()[1] != leader
    assert len(runs) == len(set(runs)), "a run was enqueued twice"
    assert runs == sorted(runs) and all(run == int(run) for run in runs)
    # (A gap between runs means a late look at the clock, or the fail-over:
    # the missed seconds were enqueued once, as designed.)
