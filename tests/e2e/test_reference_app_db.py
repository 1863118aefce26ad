"""The grading task against each real database (SQLite, PostgreSQL, MariaDB):
the models and the guarded final write hold on all three, including two
deliveries of the same message graded at the same time (what at-least-once
delivery allows): exactly one verdict, exactly one Judgement row."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy
from sqlalchemy import select
from sqlalchemy.orm import Session

from client.database import make_engine, prepare
from client.models import Judgement, Problem, Submission
from workers import tasks

pytestmark = pytest.mark.db  # real PostgreSQL and MariaDB


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def engine(request, tmp_path, monkeypatch):
    """A fresh, empty database of each kind (a schema or database of its own)."""
    name = f"refapp_{uuid.uuid4().hex[:10]}"
    kind = request.param
    if kind == "sqlite":
        url, admin_url, create, drop = f"sqlite:///{tmp_path / 'app.db'}", None, None, None
    elif kind == "postgresql":
        pytest.importorskip("psycopg")
        admin_url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        url = f"{admin_url}?options=-csearch_path%3D{name}"
        create, drop = f'CREATE SCHEMA "{name}"', f'DROP SCHEMA "{name}" CASCADE'
    else:
        pytest.importorskip("pymysql")
        admin_url = "mysql+pymysql://root@127.0.0.1:3306/test"
        url = f"mysql+pymysql://root@127.0.0.1:3306/{name}"
        create, drop = f"CREATE DATABASE `{name}`", f"DROP DATABASE `{name}`"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT") if admin_url else None
    if admin is not None:
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(create)
        except sqlalchemy.exc.OperationalError as error:
            pytest.skip(f"{kind} is not reachable: {error}")
    engine = make_engine(url)
    prepare(engine)
    monkeypatch.setattr(tasks, "ENGINE", engine)  # the task module's engine, pointed here
    monkeypatch.setenv("STARLINGPY_WORKER_INDEX", "9")  # a sandbox uid of this test's own
    try:
        yield engine
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(drop)
            admin.dispose()


def add_submission(engine, slug: str, source: str) -> int:
    with Session(engine) as session:
        problem = session.scalar(select(Problem).where(Problem.slug == slug))
        submission = Submission(problem=problem, language="python", source=source)
        session.add(submission)
        session.commit()
        return submission.id


def test_grade_stores_the_verdict_once(engine):
    accepted = add_submission(engine, "sum", "import sys\nprint(sum(int(x) for x in sys.stdin))")
    wrong = add_submission(engine, "hello", "print('hi')")
    assert tasks.grade(accepted) == "accepted"
    assert tasks.grade(wrong) == "wrong_answer"
    assert tasks.grade(accepted) is None, "a second delivery is skipped"
    with Session(engine) as session:
        row = session.get(Submission, accepted)
        assert (row.status, row.verdict, row.attempts, row.stdout_excerpt) == ("done", "accepted",
                                                                               1, "5000\n")
        assert row.time_used is not None and row.grader
        kinds = session.execute(select(Judgement.submission_id, Judgement.kind)).all()
        assert sorted(kinds) == sorted([(accepted, "grade"), (wrong, "grade")])


def test_two_deliveries_graded_at_once_give_one_verdict(engine):
    submission_id = add_submission(engine, "hello", "print('Hello, world!')")
    results, errors = [], []

    def deliver():
        try:
            results.append(tasks.grade(submission_id))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    # Both may have run the program, but only one wrote the verdict.
    with Session(engine) as session:
        verdicts = session.scalars(select(Judgement.verdict)
                                   .where(Judgement.submission_id == submission_id)).all()
        assert verdicts == ["accepted"]
        assert session.get(Submission, submission_id).verdict == "accepted"
    assert "accepted" in results
