"""Grading one program: build it (C), run it under the problem's limits,
compare its output, name the verdict.

Kept apart from the task plumbing so each step is a plain function:
``outputs_match`` and ``verdict_of`` are pure; ``grade_program`` runs real
processes through ``starlingpy.worker.programs.run_program``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

from starlingpy.worker.programs import Limits, ProgramResult, run_program

EXCERPT_CHARS = 2000
COMPILE_LIMITS = {"cpu_seconds": 20, "wall_seconds": 40, "address_space_bytes": None, "processes": 64}


@dataclass(frozen=True)
class Grade:
    """A verdict and what the student sees with it."""

    verdict: str
    detail: str
    stdout_excerpt: str
    time_used: float | None


def outputs_match(expected: str, actual: str) -> bool:
    """Equal up to line endings, trailing spaces and trailing blank lines,
    the usual tolerance of judges."""
    def normal(text: str) -> list[str]:
        lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        return lines
    return normal(expected) == normal(actual)


def verdict_of(result: ProgramResult, expected: str) -> tuple[str, str]:
    """(verdict, detail) for a finished run."""
    if result.limit_hit in ("wall", "cpu"):
        return "time_limit", f"{result.limit_hit} time limit exceeded"
    if result.limit_hit == "memory":
        return "memory_limit", "memory limit exceeded"
    if result.limit_hit in ("output", "file_size"):
        return "output_limit", "output limit exceeded"
    if result.limit_hit == "processes":
        return "runtime_error", "process limit exceeded (fork refused)"
    if result.signal is not None:
        return "runtime_error", f"killed by signal {result.signal}"
    if result.exit_code != 0:
        return "runtime_error", f"exit status {result.exit_code}"
    actual = result.stdout.decode(errors="replace")
    if outputs_match(expected, actual):
        return "accepted", ""
    return "wrong_answer", "output differs from the expected output"


def python_interpreter() -> str:
    """A Python the sandbox user may execute (ours may live under /root)."""
    for candidate in (os.environ.get("GRADER_PYTHON"), "/usr/bin/python3",
                      "/usr/local/bin/python3", shutil.which("python3"), sys.executable):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def sandbox_uid() -> int | None:
    """The uid programs run as (root only). One per worker instance, so one
    student's fork bomb cannot use up another worker's process budget."""
    if os.geteuid() != 0:
        return None
    index = os.environ.get("STARLINGPY_WORKER_INDEX", "")
    return 61000 + int(index) if index.isdigit() else 65534


def limits_for(time_limit: float, memory_limit_mb: int, output_limit_kb: int) -> Limits:
    uid = sandbox_uid()
    return Limits(cpu_seconds=time_limit, wall_seconds=time_limit * 3 + 1,
                  address_space_bytes=memory_limit_mb * 1024 * 1024, processes=32,
                  stdout_bytes=output_limit_kb * 1024, stderr_bytes=64 * 1024,
                  file_size_bytes=1024 * 1024, run_as_uid=uid, run_as_gid=uid)


def grade_program(language: str, source: str, test_input: str, expected: str,
                  limits: Limits) -> Grade:
    """Build (for C) and run ``source`` on ``test_input``; the verdict."""
    workdir = tempfile.mkdtemp(prefix="grade-")
    try:
        if limits.run_as_uid is not None:
            os.chown(workdir, limits.run_as_uid, limits.run_as_gid or limits.run_as_uid)
        if language == "python":
            _write(workdir, "main.py", source, limits)
            argv = [python_interpreter(), "-I", "main.py"]
        elif language == "c":
            _write(workdir, "main.c", source, limits)
            build = run_program(["gcc", "-O2", "-o", "main", "main.c", "-lm"], cwd=workdir,
                                env=_env(workdir), limits=_compile_limits(limits))
            if build.exit_code != 0:
                return Grade("compile_error", build.stderr.decode(errors="replace")[-EXCERPT_CHARS:],
                             "", None)
            argv = ["./main"]
        else:
            return Grade("compile_error", f"unsupported language {language!r}", "", None)
        result = run_program(argv, stdin=test_input.encode(), cwd=workdir, env=_env(workdir),
                             limits=limits)
        verdict, detail = verdict_of(result, expected)
        excerpt = result.stdout[:EXCERPT_CHARS].decode(errors="replace")
        if verdict == "runtime_error" and result.stderr:
            detail += "\n" + result.stderr[-EXCERPT_CHARS:].decode(errors="replace")
        return Grade(verdict, detail, excerpt, round(result.cpu_time, 3))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _write(workdir: str, name: str, source: str, limits: Limits) -> None:
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(source)
    if limits.run_as_uid is not None:
        os.chown(path, limits.run_as_uid, limits.run_as_gid or limits.run_as_uid)


def _env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir}


def _compile_limits(limits: Limits) -> Limits:
    return Limits(**COMPILE_LIMITS, run_as_uid=limits.run_as_uid, run_as_gid=limits.run_as_gid)
