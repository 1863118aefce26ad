"""The worker tier (README, "Workers"): tasks, the worker loop, database
verification and fork safety, and running external programs under limits.

::

    from starlingpy.worker import TaskSet, Worker, run_program, Limits
"""

from starlingpy.worker.limits import TaskTimeout
from starlingpy.worker.programs import Limits, ProgramResult, run_program
from starlingpy.worker.tasks import BadMessage, FailureRecord, Retry, Task, TaskMessage, TaskSet

__all__ = ["TaskSet", "Task", "TaskMessage", "FailureRecord", "BadMessage", "Retry", "TaskTimeout",
           "Worker",
           "WorkerStatistics", "ColdStop", "WarmStop", "StopRequested", "run_program", "Limits",
           "ProgramResult"]


def __getattr__(name):
    # The loop imports the client; keep `from starlingpy.worker import run_program`
    # usable on its own (the grader) without it.
    if name in ("Worker", "WorkerStatistics", "ColdStop", "WarmStop", "StopRequested"):
        from starlingpy.worker import loop
        return getattr(loop, name)
    raise AttributeError(name)
