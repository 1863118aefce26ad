"""The reference application's tasks: what the workers do.

- ``grade(submission_id)``, on the high-priority ``submissions`` queue: run
  the program on the problem's test input under its limits, compare stdout,
  store the verdict.
- ``regrade_problem(problem_id)``, a batch job on the low-priority
  ``regrades`` queue: queue a ``regrade_submission`` for every submission of
  the problem (also low priority, so new submissions always go first).

Delivery is at least once (a worker killed mid-grade leaves its message to
another), so ``grade`` is idempotent: a submission that is already ``done``
is skipped, and the final write is guarded (``WHERE status != 'done'``) so
two deliveries can never both give a verdict.

Settings (environment): ``APP_DATABASE_URL`` (see ``client/database.py``),
``STARLINGPY_SERVER`` (host:port for the web tier's pushes, default
127.0.0.1:22122). A task that pushes while a worker runs it, like
``regrade_problem``, uses that worker's server (``starlingpy work --server``).
"""

from __future__ import annotations

import logging
import os
import socket

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from client.database import database_url, make_engine
from client.models import DONE, RUNNING, Judgement, Problem, Submission, utcnow
from starlingpy.client import Client
from starlingpy.worker import db
from starlingpy.worker.tasks import TaskSet
from workers.grading import grade_program, limits_for

log = logging.getLogger("workers.tasks")

GRADE_QUEUE = "submissions"   # high priority: a student is waiting
BATCH_QUEUE = "regrades"      # low priority: nobody is waiting
QUEUES = [GRADE_QUEUE, BATCH_QUEUE]

_server: str | None = None


def server_address() -> str:
    return _server or os.environ.get("STARLINGPY_SERVER", "127.0.0.1:22122")


def connect(server: str | None) -> None:
    """Point pushes at ``server`` (host:port); None keeps the default."""
    global _server
    if server:
        _server = server


tasks = TaskSet("grader", client_factory=lambda: Client([server_address()]),
                failure_queue="grader_failed")

# Module-level, so `starlingpy work` finds it and verifies its connections
# before each message. Creating it connects to nothing. The web app creates
# the tables (client.database.prepare) before any submission can exist.
ENGINE: Engine = make_engine(database_url(), create=db.create_engine)


def _session() -> Session:
    """The worker's per-message Session, or a plain one when called directly."""
    try:
        return db.session(ENGINE)
    except LookupError:
        return Session(ENGINE)


def _grader_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@tasks.task(queue=GRADE_QUEUE, max_attempts=3)
def grade(submission_id: int) -> str | None:
    """Grade one submission; returns its verdict (None if there was nothing to do)."""
    return _judge(submission_id, kind="grade")


@tasks.task(queue=BATCH_QUEUE, max_attempts=3)
def regrade_submission(submission_id: int) -> str | None:
    """Grade a submission again (after a problem's tests changed)."""
    return _judge(submission_id, kind="regrade")


@tasks.task(queue=BATCH_QUEUE)
def regrade_problem(problem_id: int) -> int:
    """Queue a re-grade of every submission of a problem; returns how many."""
    session = _session()
    try:
        ids = list(session.scalars(select(Submission.id).where(Submission.problem_id == problem_id)
                                   .order_by(Submission.id)))
    finally:
        session.close()
    for submission_id in ids:
        regrade_submission.push(submission_id)
    log.info("problem %d: %d re-grade(s) queued", problem_id, len(ids))
    return len(ids)


def _judge(submission_id: int, kind: str) -> str | None:
    session = _session()
    try:
        submission = session.get(Submission, submission_id)
        if submission is None:
            log.warning("submission %d does not exist: nothing to grade", submission_id)
            return None
        if kind == "grade" and submission.status == DONE:
            log.info("submission %d already graded (%s): duplicate delivery skipped",
                     submission_id, submission.verdict)
            return None
        problem = session.get(Problem, submission.problem_id)
        language, source = submission.language, submission.source
        test_input, expected = problem.test_input, problem.expected_output
        limits = limits_for(problem.time_limit, problem.memory_limit_mb, problem.output_limit_kb)
        running = (update(Submission).where(Submission.id == submission_id)
                   .values(status=RUNNING, grader=_grader_name(),
                           attempts=Submission.attempts + 1))
        if kind == "grade":
            running = running.where(Submission.status != DONE)
        session.execute(running)
        session.commit()  # the page shows "running"; no transaction stays open while we run

        result = grade_program(language, source, test_input, expected, limits)

        final = (update(Submission).where(Submission.id == submission_id)
                 .values(status=DONE, verdict=result.verdict, detail=result.detail,
                         stdout_excerpt=result.stdout_excerpt, time_used=result.time_used,
                         graded_at=utcnow()))
        if kind == "grade":
            final = final.where(Submission.status != DONE)  # one verdict, even if delivered twice
        if session.execute(final).rowcount == 1:
            session.add(Judgement(submission_id=submission_id, kind=kind,
                                  verdict=result.verdict, grader=_grader_name()))
        session.commit()
        log.info("submission %d: %s (%s)", submission_id, result.verdict, kind)
        return result.verdict
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
