"""The reference application's data: problems and the submissions to them.

A submission moves ``pending`` -> ``running`` -> ``done``; its ``verdict`` is
set exactly once, when it becomes ``done`` (a guarded UPDATE, see
``workers/tasks.py``), and each final verdict also writes one ``Judgement``
row, so "exactly one verdict per submission" can be checked in the data.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

PENDING, RUNNING, DONE = "pending", "running", "done"
VERDICTS = ("accepted", "wrong_answer", "time_limit", "memory_limit", "output_limit",
            "runtime_error", "compile_error")
LANGUAGES = ("python", "c")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Problem(Base):
    """A task to solve: the test input, the expected output and the limits."""

    __tablename__ = "problems"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    statement: Mapped[str] = mapped_column(Text, default="")
    test_input: Mapped[str] = mapped_column(Text, default="")
    expected_output: Mapped[str] = mapped_column(Text)
    time_limit: Mapped[float] = mapped_column(Float, default=1.0)  # CPU seconds
    memory_limit_mb: Mapped[int] = mapped_column(Integer, default=256)
    output_limit_kb: Mapped[int] = mapped_column(Integer, default=64)

    submissions: Mapped[list[Submission]] = relationship(back_populates="problem")

    def to_json(self) -> dict:
        return {"id": self.id, "slug": self.slug, "title": self.title,
                "statement": self.statement, "time_limit": self.time_limit,
                "memory_limit_mb": self.memory_limit_mb, "output_limit_kb": self.output_limit_kb}


class Submission(Base):
    """One program submitted for one problem, and how it was judged."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"), index=True)
    language: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    verdict: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")  # why: which limit, exit status
    stdout_excerpt: Mapped[str] = mapped_column(Text, default="")
    time_used: Mapped[float | None] = mapped_column(Float, nullable=True)  # CPU seconds
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # gradings started
    grader: Mapped[str | None] = mapped_column(String(100), nullable=True)  # "host:pid"
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    graded_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    problem: Mapped[Problem] = relationship(back_populates="submissions")
    judgements: Mapped[list[Judgement]] = relationship(back_populates="submission")

    def to_json(self) -> dict:
        return {"id": self.id, "problem": self.problem.slug if self.problem else None,
                "language": self.language, "status": self.status, "verdict": self.verdict,
                "detail": self.detail, "stdout_excerpt": self.stdout_excerpt,
                "time_used": self.time_used, "attempts": self.attempts}


class Judgement(Base):
    """One final verdict given to a submission (``kind``: grade or regrade)."""

    __tablename__ = "judgements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str] = mapped_column(String(32))
    grader: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    submission: Mapped[Submission] = relationship(back_populates="judgements")
