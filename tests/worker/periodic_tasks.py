"""A task module with a periodic job, for the scheduler tests: a job every
second on queue "periodic" (which the test's workers do not read)."""

from __future__ import annotations

from datetime import timedelta

from starlingpy.worker import TaskSet

tasks = TaskSet("periodic_sample")


@tasks.task(queue="periodic")
def tick(label: str) -> None:
    pass


@tasks.task(queue="idle")
def unused() -> None:
    pass


tasks.every(timedelta(seconds=1), tick, "every-second")
