"""The reference application's grading rules: output comparison and verdicts."""

from __future__ import annotations

import pytest

from starlingpy.worker.programs import ProgramResult
from workers.grading import outputs_match, verdict_of


@pytest.mark.parametrize("expected, actual, same", [
    ("5\n", "5\n", True),
    ("5\n", "5", True),                      # missing final newline
    ("5\n", "5  \n\n\n", True),              # trailing spaces and blank lines
    ("a\nb\n", "a\r\nb\r\n", True),          # CRLF
    ("5\n", "6\n", False),
    ("a\nb\n", "a\n\nb\n", False),           # a blank line inside counts
    ("a b\n", "a  b\n", False),              # inner spaces count
    ("", "", True),
    ("x\n", "", False),
])
def test_outputs_match(expected, actual, same):
    assert outputs_match(expected, actual) is same


def result(**changes) -> ProgramResult:
    base = {"stdout": b"5\n", "stderr": b"", "exit_code": 0, "signal": None, "wall_time": 0.1,
            "cpu_time": 0.05, "limit_hit": None}
    return ProgramResult(**{**base, **changes})


@pytest.mark.parametrize("changes, verdict", [
    ({}, "accepted"),
    ({"stdout": b"6\n"}, "wrong_answer"),
    ({"limit_hit": "cpu", "exit_code": None, "signal": 24}, "time_limit"),
    ({"limit_hit": "wall", "exit_code": None, "signal": 9}, "time_limit"),
    ({"limit_hit": "memory", "exit_code": 1}, "memory_limit"),
    ({"limit_hit": "output", "exit_code": None, "signal": 9}, "output_limit"),
    ({"limit_hit": "file_size", "exit_code": None, "signal": 25}, "output_limit"),
    ({"limit_hit": "processes", "exit_code": 1}, "runtime_error"),
    ({"exit_code": 3}, "runtime_error"),
    ({"exit_code": None, "signal": 11}, "runtime_error"),
    # Right output but a crash at the end is still a runtime error.
    ({"exit_code": 1, "stdout": b"5\n"}, "runtime_error"),
])
def test_verdict_rules(changes, verdict):
    assert verdict_of(result(**changes), "5\n")[0] == verdict
